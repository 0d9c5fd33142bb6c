//go:build unix

// Package replicas is the end-to-end test of several Switchyard replicas
// behind a real load balancer: HAProxy (deploy/haproxy/haproxy.cfg.tmpl,
// consistent hashing on the room), 3 gateway processes of the binary built
// once, Redis for the shared idempotency window, a shared flag document
// (provider blob on a directory), a real PartyKit dev server and the real
// Inngest dev server, all on loopback. It checks per-room order on both
// transports at shadow and dual while a replica is SIGKILLed and
// restarted, that callers never get a false 200, that one requestId sent
// to two replicas is published once per transport, that a Redis outage
// fails open (counted), and measures how fast a flag flip and the kill
// switch reach every replica.
package replicas

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchyard/switchyard/dedupredis/redisdev"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/legacyparty/partykitdev"
	"github.com/switchyard/switchyard/realtime"
	"github.com/switchyard/switchyard/upstream"
)

const (
	apiKey     = "replicas-test-key-0123456789"
	adminToken = "replicas-admin-token-0123456789"
	app        = "ai-hero"
	nReplicas  = 3
	// killSwitchBound is the bound for the kill switch to reach
	// every replica.
	killSwitchBound = 5 * time.Second
)

// testFlags is the shared flag document: video-ready at shadow, ai-stream
// at dual.
const testFlags = `{
  "metadata": {"env": "test"},
  "flags": {
    "realtime-killswitch": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
    "realtime-default": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "legacy"},
    "realtime-video-ready": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "shadow"},
    "realtime-ai-stream": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "dual"}
  }
}
`

const configTmpl = `env: test
listen: 127.0.0.1:%d
admin: {listen: "127.0.0.1:%d", token: %q}
log: {level: info, format: json}
flags: {provider: blob, source: %q}
idempotency: {store: redis, timeout: 100ms, backoff: 500ms, redis: {addr: %q}}
channels:
  - {name: video-ready, events: [video.asset.ready]}
  - {name: ai-stream, events: [ai.message]}
apps:
  ai-hero:
    apiKeys: [%q]
    party: {url: %q, party: main}
    realtime: {url: %q, channel: "{room}"}
shadow: {sampleRate: 0}
server: {shutdownTimeout: 5s}
upstream: {timeout: 5s}
`

// replica is one gateway process and its ports.
type replica struct {
	name              string
	public, admin     int
	cfg, log          string
	p                 *proc
	publicURL, adminU string
}

type cluster struct {
	t        *testing.T
	bin, dir string
	reps     []*replica
}

func (c *cluster) start(r *replica) {
	c.t.Helper()
	r.p = startProc(c.t, r.name, r.log, nil, c.bin, "serve", "--config", r.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitHTTP(ctx, r.p, r.adminU+"/readyz", false); err != nil {
		c.t.Fatal(err)
	}
}

// received is what the subscribers saw of one room on one transport.
type received struct {
	mu   sync.Mutex
	seqs []int
	ids  map[string]int // requestId -> copies
}

func (r *received) add(env envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs = append(r.seqs, env.Body.Seq)
	r.ids[env.RequestID]++
}

func (r *received) copies(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

// stats returns the out-of-order arrivals (a seq below one already seen,
// repeats excluded), the repeated copies and the distinct seqs received.
func (r *received) stats() (disorder, dups, distinct int) {
	disorder, dups, distinct, _ = r.detail()
	return
}

// detail is stats with the arrivals around each disorder.
func (r *received) detail() (disorder, dups, distinct int, where []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[int]bool{}
	maxSeen := -1
	for i, s := range r.seqs {
		if seen[s] {
			dups++
			continue
		}
		seen[s] = true
		if s < maxSeen {
			disorder++
			where = append(where, fmt.Sprint(r.seqs[max(0, i-4):min(len(r.seqs), i+3)]))
		}
		maxSeen = max(maxSeen, s)
	}
	return disorder, dups, len(seen), where
}

type envelope struct {
	Body struct {
		Seq  int    `json:"seq"`
		Room string `json:"room"`
	} `json:"body"`
	RequestID string `json:"requestId"`
	Name      string `json:"name"`
}

// roomPlan is one room of the run: its event (so its stage), its API path,
// and what its sender saw.
type roomPlan struct {
	room, event, stage string
	path               string // dropin, roomPath, header
	legacy, realtime   *received
	// mu guards the sender's figures below (read by the killer while the
	// sender runs).
	mu               sync.Mutex
	ok               map[int]string // seq -> requestId answered 200
	fivexx, attempts int
	noAnswer         int
	servedBy         map[string]int
	// legacyReg and realtimeReg hold the test subscribers' metrics: a
	// subscriber that reconnected may have missed a broadcast (both
	// transports deliver at most once), which no gateway answer can cause.
	legacyReg, realtimeReg *prometheus.Registry
}

// answeringReconnects is how often the test's subscriber on the answering
// transport reconnected during the run.
func (rp *roomPlan) answeringReconnects(t *testing.T) float64 {
	reg, transport := rp.legacyReg, "legacy"
	if rp.stage == "dual" {
		reg, transport = rp.realtimeReg, "realtime"
	}
	if reg == nil {
		return 0
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "switchyard_subscriber_reconnects_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "transport" && l.GetValue() == transport {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func (rp *roomPlan) answering() *received {
	if rp.stage == "dual" {
		return rp.realtime
	}
	return rp.legacy
}

func (rp *roomPlan) offPath() *received {
	if rp.stage == "dual" {
		return rp.legacy
	}
	return rp.realtime
}

func TestMultiReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts HAProxy, Redis, PartyKit, Inngest and 3 gateways")
	}
	for _, bin := range []string{"haproxy", "redis-server"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed: scripts/test-deps.sh installs it", bin)
			}
			t.Skipf("%s not installed (make test-deps installs it)", bin)
		}
	}
	started := time.Now()
	root := moduleRoot(t)
	dir := t.TempDir()

	// Slow preparations run together: the build, the Inngest dev server's
	// binary; PartyKit starts on this goroutine meanwhile.
	build := goBackground(func() error { _, err := buildOnce(root, dir); return err })
	var inngestBin string
	innBin := goBackground(func() (err error) { inngestBin, err = inngestBinary(root); return err })
	partyURL := partykitdev.Start(t)
	redis := redisdev.Start(t)
	prepCtx, cancelPrep := context.WithTimeout(context.Background(), 16*time.Minute)
	defer cancelPrep()
	if err := innBin.wait(prepCtx); err != nil {
		t.Fatal(err)
	}
	inngestURL := startInngest(t, inngestBin, dir)
	if err := build.wait(prepCtx); err != nil {
		t.Fatal(err)
	}
	t.Logf("prepared in %v (build, PartyKit, Inngest, Redis)", time.Since(started).Round(time.Millisecond))

	// The shared flag document and the replicas' configs.
	flagsDir := filepath.Join(dir, "flags")
	if err := os.Mkdir(flagsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	flagPath := filepath.Join(flagsDir, "flags.json")
	if err := os.WriteFile(flagPath, []byte(testFlags), 0o644); err != nil {
		t.Fatal(err)
	}
	source := "file://" + flagPath
	c := &cluster{t: t, bin: filepath.Join(dir, "switchyard"), dir: dir}
	var servers []haproxyServer
	for i := range nReplicas {
		r := &replica{name: fmt.Sprintf("g%d", i), public: freePort(t), admin: freePort(t)}
		r.cfg = filepath.Join(dir, r.name+".yaml")
		r.log = filepath.Join(dir, r.name+".log")
		r.publicURL = "http://127.0.0.1:" + strconv.Itoa(r.public)
		r.adminU = "http://127.0.0.1:" + strconv.Itoa(r.admin)
		cfg := fmt.Sprintf(configTmpl, r.public, r.admin, adminToken, source, redis.Addr(), apiKey, partyURL, inngestURL)
		if err := os.WriteFile(r.cfg, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		c.reps = append(c.reps, r)
		servers = append(servers, haproxyServer{Name: r.name, Addr: "127.0.0.1:" + strconv.Itoa(r.public), AdminPort: r.admin})
	}
	for _, r := range c.reps {
		c.start(r)
	}
	lbURL, statsURL := startHAProxy(t, root, dir, servers)
	allUp := map[string]string{"g0": "UP", "g1": "UP", "g2": "UP"}
	upCtx, cancelUp := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelUp()
	if err := waitServers(upCtx, statsURL, allUp); err != nil {
		t.Fatal(err)
	}

	// Rooms: 3 at shadow (video.asset.ready), 3 at dual (ai.message), over
	// the three routable API forms.
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	var rooms []*roomPlan
	paths := []string{"dropin", "roomPath", "header"}
	for i := range 6 {
		rp := &roomPlan{room: fmt.Sprintf("mr-%s-%d", run, i), event: "video.asset.ready", stage: "shadow", path: paths[i%3],
			legacy: &received{ids: map[string]int{}}, realtime: &received{ids: map[string]int{}}, ok: map[int]string{}, servedBy: map[string]int{}}
		if i >= 3 {
			rp.event, rp.stage = "ai.message", "dual"
		}
		rooms = append(rooms, rp)
	}
	byRoom := map[string]*roomPlan{}
	for _, rp := range rooms {
		byRoom[rp.room] = rp
	}
	subscribe(t, partyURL, inngestURL, rooms, byRoom)

	// The run: each room's sender publishes its messages one after the
	// other (as an app does), retrying a 5xx with the same requestId; a
	// replica serving rooms is SIGKILLed a third of the way through and
	// restarted at once.
	const perRoom = 120
	var sent atomic.Int64
	killAt := int64(len(rooms) * perRoom / 3)
	killed := make(chan string, 1)
	runCtx, cancelRun := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancelRun()
	var wg sync.WaitGroup
	var unexpected sync.Map
	for _, rp := range rooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(15 * time.Millisecond) // pacing, so the run spans the kill and the restart
			defer tick.Stop()
			for seq := range perRoom {
				id := fmt.Sprintf("%s-%d", rp.room, seq)
				for attempt := 0; ; attempt++ {
					status, served, err := publish(runCtx, lbURL, rp, seq, id)
					rp.mu.Lock()
					rp.attempts++
					if err == nil && status == http.StatusOK {
						rp.ok[seq] = id
						rp.servedBy[served]++
						rp.mu.Unlock()
						break
					}
					if err == nil && status >= 500 && attempt < 20 {
						rp.fivexx++
						rp.mu.Unlock()
						continue
					}
					rp.mu.Unlock()
					// A connection closed without an answer (the replica
					// died, HAProxy closed the keep-alive connection): no
					// answer is no false 200; the app retries.
					if err != nil && runCtx.Err() == nil && attempt < 20 {
						rp.mu.Lock()
						rp.noAnswer++
						rp.mu.Unlock()
						continue
					}
					unexpected.Store(id, fmt.Sprintf("status %d, err %v", status, err))
					break
				}
				sent.Add(1)
				select {
				case <-tick.C:
				case <-runCtx.Done():
					return
				}
			}
		}()
	}
	// The killer: once a third is sent, SIGKILL the replica that served
	// the most rooms so far, then restart it.
	var victim *replica
	var downFor time.Duration
	killDone := goBackground(func() error {
		for sent.Load() < killAt {
			select {
			case <-runCtx.Done():
				return runCtx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		victim = c.reps[mostServing(rooms)]
		killed <- victim.name
		t0 := time.Now()
		victim.p.kill()
		// Restart once HAProxy has taken it out of the ring, so that its
		// rooms move to the others and back while traffic runs.
		if err := waitServers(runCtx, statsURL, map[string]string{victim.name: "DOWN"}); err != nil {
			return err
		}
		c.start(victim)
		if err := waitServers(runCtx, statsURL, allUp); err != nil {
			return err
		}
		downFor = time.Since(t0)
		return nil
	})
	wg.Wait()
	if err := killDone.wait(runCtx); err != nil {
		t.Fatal(err)
	}
	bad := 0
	unexpected.Range(func(k, v any) bool {
		t.Errorf("message %v: %v (want 200 or a 5xx retried)", k, v)
		bad++
		return true
	})
	if bad > 0 {
		logNon200(t, filepath.Join(dir, "haproxy.log"))
	}

	// Every 200 must be on its answering transport (no false 200); then
	// order and duplicates per transport.
	waitCtx, cancelWait := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancelWait()
	for _, rp := range rooms {
		for {
			missing := 0
			for _, id := range rp.ok {
				if rp.answering().copies(id) == 0 {
					missing++
				}
			}
			if missing == 0 {
				break
			}
			if waitCtx.Err() != nil {
				if n := rp.answeringReconnects(t); n > 0 {
					// Unobservable, not a false 200: the subscriber was away.
					t.Logf("room %s (%s, %s): %d messages answered 200 not seen by the test's subscriber, which reconnected %.0f times during the run (at-most-once delivery)", rp.room, rp.stage, rp.path, missing, n)
				} else {
					t.Errorf("room %s (%s, %s): %d messages answered 200 never reached the answering transport (false 200)", rp.room, rp.stage, rp.path, missing)
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("kill-and-restart run: %s SIGKILLed after %d messages, back in HAProxy's ring after %v",
		<-killed, killAt, downFor.Round(time.Millisecond))
	moved := 0
	for _, rp := range rooms {
		if len(rp.servedBy) > 1 {
			moved++
		}
	}
	if moved == 0 {
		t.Error("no room was served by two replicas: the kill did not move any room")
	}
	var totDisorder, totDups, totOffMissing, tot5xx, totNoAnswer int
	for _, rp := range rooms {
		ad, adup, an := rp.answering().stats()
		od, odup, on := rp.offPath().stats()
		offMissing := 0
		for _, id := range rp.ok {
			if rp.offPath().copies(id) == 0 {
				offMissing++
			}
		}
		t.Logf("room %s %-6s via %-8s served by %v: 200s %d, 5xx retried %d, no answer retried %d; answering: %d distinct, %d out of order, %d duplicates; off-path: %d distinct, %d out of order, %d duplicates, %d missing",
			rp.room, rp.stage, rp.path, rp.servedBy, len(rp.ok), rp.fivexx, rp.noAnswer, an, ad, adup, on, od, odup, offMissing)
		if ad+od > 0 {
			_, _, _, aw := rp.answering().detail()
			_, _, _, ow := rp.offPath().detail()
			t.Errorf("room %s (%s): per-room order broken: %d out of order on the answering transport %v, %d off-path %v", rp.room, rp.stage, ad, aw, od, ow)
		}
		if len(rp.ok) != perRoom {
			t.Errorf("room %s: %d of %d messages answered 200", rp.room, len(rp.ok), perRoom)
		}
		totDisorder += ad + od
		totDups += adup + odup
		totOffMissing += offMissing
		tot5xx += rp.fivexx
		totNoAnswer += rp.noAnswer
	}
	t.Logf("kill-and-restart totals: %d messages, %d answered 5xx and %d without an answer (then retried), %d out of order, %d duplicate copies, %d off-path copies lost",
		len(rooms)*perRoom, tot5xx, totNoAnswer, totDisorder, totDups, totOffMissing)

	checkIdempotencyAcrossReplicas(t, c, rooms[0])
	checkRedisOutage(t, c, lbURL, redis, rooms)
	measureFlagPropagation(t, c, source)
	t.Logf("total wall time %v", time.Since(started).Round(time.Millisecond))
}

// publish sends message seq of rp through the load balancer by rp's API
// form; it returns the status and the replica that answered.
func publish(ctx context.Context, lbURL string, rp *roomPlan, seq int, id string) (int, string, error) {
	body := map[string]any{"body": map[string]any{"seq": seq, "room": rp.room}, "name": rp.event, "requestId": id}
	u := lbURL + "/v1/rooms/" + url.PathEscape(rp.room) + "/broadcast"
	hdr := http.Header{"Authorization": {"Bearer " + apiKey}}
	switch rp.path {
	case "dropin":
		u = lbURL + "/apps/" + app + "/party/" + url.PathEscape(rp.room)
		hdr = http.Header{}
	case "header":
		u = lbURL + "/v1/broadcast"
		body["room"] = rp.room
		hdr.Set("X-Switchyard-Room", rp.room)
	}
	return post(ctx, u, hdr, body)
}

func post(ctx context.Context, u string, hdr http.Header, body any) (int, string, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(string(b)))
	if err != nil {
		return 0, "", err
	}
	req.Header = hdr.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Served-By"), nil
}

// mostServing returns the index of the replica that answered the most
// rooms so far.
func mostServing(rooms []*roomPlan) int {
	count := map[string]int{}
	for _, rp := range rooms {
		best, n := "", -1
		rp.mu.Lock()
		for name, k := range rp.servedBy {
			if k > n {
				best, n = name, k
			}
		}
		rp.mu.Unlock()
		count[best]++
	}
	names := make([]string, 0, len(count))
	for n := range count {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return count[names[i]] > count[names[j]] })
	i, _ := strconv.Atoi(strings.TrimPrefix(names[0], "g"))
	return i
}

// subscribe opens a PartyKit and an Inngest Realtime subscription per
// room, as browsers do, and waits until all are in effect.
func subscribe(t *testing.T, partyURL, inngestURL string, rooms []*roomPlan, byRoom map[string]*roomPlan) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var legacySubs []*legacyparty.Subscription
	rtReg := prometheus.NewRegistry()
	for _, rp := range rooms {
		rp.legacyReg, rp.realtimeReg = prometheus.NewRegistry(), rtReg
		s := legacyparty.Subscribe(legacyparty.SubscriberConfig{URL: partyURL, Party: "main", Room: rp.room}, func(data []byte, _ time.Time) {
			var env envelope
			if json.Unmarshal(data, &env) == nil && env.RequestID != "" {
				rp.legacy.add(env)
			}
		}, upstream.NewMetrics(rp.legacyReg), nil)
		t.Cleanup(func() { _ = s.Close() })
		legacySubs = append(legacySubs, s)
	}
	rc, err := realtime.NewClient(app, realtime.Config{URL: inngestURL, ChannelTemplate: "{room}", Policy: upstream.Policy{}.WithDefaults()}, http.DefaultClient, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := realtime.NewSubscriber(realtime.SubscriberConfig{URL: inngestURL, OnMsg: func(m realtime.Msg) {
		var env envelope
		if json.Unmarshal(m.Data, &env) == nil {
			if rp := byRoom[env.Body.Room]; rp != nil {
				rp.realtime.add(env)
			}
		}
	}}, rc, upstream.NewMetrics(rtReg), nil)
	if err != nil {
		t.Fatal(err)
	}
	subCtx, stop := context.WithCancel(context.Background())
	subDone := goBackground(func() error { return sub.Run(subCtx) })
	t.Cleanup(func() {
		stop()
		wctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = subDone.wait(wctx)
	})
	var rtSubs []*realtime.Subscription
	for _, rp := range rooms {
		tok, err := rc.MintToken(ctx, rp.room, []string{"video-ready", "ai-stream"})
		if err != nil {
			t.Fatal(err)
		}
		s, err := sub.Sub(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		rtSubs = append(rtSubs, s)
	}
	for {
		ready := true
		for _, s := range legacySubs {
			ready = ready && s.Ready()
		}
		for _, s := range rtSubs {
			ready = ready && s.Ready()
		}
		if ready {
			return
		}
		if ctx.Err() != nil {
			t.Fatal("subscriptions not ready within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkIdempotencyAcrossReplicas sends one requestId to two replicas
// directly (as an app whose first call timed out and whose retry landed
// elsewhere): one publish per transport. A marker sent afterwards through
// the second replica, in the same room, proves no late copy is coming (per
// room order on that replica).
func checkIdempotencyAcrossReplicas(t *testing.T, c *cluster, rp *roomPlan) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	hdr := http.Header{"Authorization": {"Bearer " + apiKey}}
	id := rp.room + "-idem"
	body := map[string]any{"room": rp.room, "name": rp.event, "body": map[string]any{"seq": 100000, "room": rp.room}, "requestId": id}
	answers := []string{}
	for _, r := range c.reps[:2] {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.publicURL+"/v1/broadcast", strings.NewReader(string(b)))
		req.Header = hdr.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		ans, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", r.name, resp.StatusCode, ans)
		}
		answers = append(answers, string(ans))
	}
	if !strings.Contains(answers[1], `"duplicate"`) {
		t.Errorf("second replica's answer %s, want duplicate", answers[1])
	}
	marker := rp.room + "-marker"
	body["requestId"], body["body"] = marker, map[string]any{"seq": 100001, "room": rp.room}
	if st, _, err := post(ctx, c.reps[1].publicURL+"/v1/broadcast", hdr, body); err != nil || st != http.StatusOK {
		t.Fatalf("marker: %d %v", st, err)
	}
	for rp.legacy.copies(marker) == 0 || rp.realtime.copies(marker) == 0 {
		if ctx.Err() != nil {
			t.Fatal("marker not received on both transports")
		}
		time.Sleep(10 * time.Millisecond)
	}
	l, r := rp.legacy.copies(id), rp.realtime.copies(id)
	t.Logf("one requestId through two replicas: %d PartyKit copy, %d Inngest Realtime copy", l, r)
	if l != 1 || r != 1 {
		t.Errorf("one requestId through two replicas: %d legacy and %d realtime copies, want 1 and 1", l, r)
	}
}

// checkRedisOutage kills Redis mid-traffic: every answer is still a 200
// and the fail-open counter moves.
func checkRedisOutage(t *testing.T, c *cluster, lbURL string, redis *redisdev.Server, rooms []*roomPlan) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before := 0.0
	for _, r := range c.reps {
		v, err := metricSum(ctx, r.adminU, adminToken, "switchyard_idempotency_fail_open_total")
		if err != nil {
			t.Fatal(err)
		}
		before += v
	}
	redis.Kill()
	var lat []time.Duration
	for i := range 30 {
		rp := rooms[1+i%2] // the roomPath and header forms carry requestIds
		start := time.Now()
		st, _, err := publish(ctx, lbURL, rp, 200000+i, fmt.Sprintf("%s-noredis-%d", rp.room, i))
		lat = append(lat, time.Since(start))
		if err != nil || st != http.StatusOK {
			t.Fatalf("with Redis down: %d %v, want 200 (fail open)", st, err)
		}
	}
	after := 0.0
	for _, r := range c.reps {
		v, err := metricSum(ctx, r.adminU, adminToken, "switchyard_idempotency_fail_open_total")
		if err != nil {
			t.Fatal(err)
		}
		after += v
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("Redis killed: 30 of 30 answered 200, switchyard_idempotency_fail_open_total %v -> %v, answer p50 %v, max %v",
		before, after, lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	if after <= before {
		t.Errorf("fail-open counter did not move (%v -> %v)", before, after)
	}
}

// measureFlagPropagation flips a stage flag, then the kill switch, through
// the CLI on the shared source, and measures when each replica's resolver
// (GET /v1/admin/routes, which reads the hot path's cache) sees it.
func measureFlagPropagation(t *testing.T, c *cluster, source string) {
	t.Helper()
	type want func(route map[string]any) bool
	measure := func(what string, args []string, ok want) []time.Duration {
		t.Helper()
		start := time.Now()
		cmd := exec.Command(c.bin, append(args, "--source", source, "--env", "test", "--reason", "multi-replica test: "+what)...)
		cmd.Env = append(os.Environ(), "USER=replicas-test")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*killSwitchBound)
		defer cancel()
		got := make([]time.Duration, len(c.reps))
		var wg sync.WaitGroup
		for i, r := range c.reps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if route, err := adminRoute(ctx, r.adminU); err == nil && ok(route) {
						got[i] = time.Since(start)
						return
					}
					if ctx.Err() != nil {
						got[i] = -1
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()
		}
		wg.Wait()
		return got
	}
	flip := measure("flip video-ready to dual", []string{"flags", "set", "realtime-video-ready", "dual"},
		func(r map[string]any) bool { return r["stage"] == "dual" })
	kill := measure("kill switch on", []string{"flags", "killswitch", "on"},
		func(r map[string]any) bool { return r["killSwitch"] == true && r["stage"] == "legacy" })
	t.Logf("flag flip reached g0, g1, g2 after %v (from the CLI's start; pollInterval 500ms)", flip)
	t.Logf("kill switch reached g0, g1, g2 after %v (bound %v)", kill, killSwitchBound)
	for i, d := range append(flip, kill...) {
		if d < 0 || d > killSwitchBound {
			t.Errorf("change %d reached replica %d after %v, want within %v", i/len(c.reps), i%len(c.reps), d, killSwitchBound)
		}
	}
	// The audit trail of both changes sits beside the document.
	out, err := exec.Command(c.bin, "flags", "get", "realtime-killswitch", "--source", source).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "default:   on") {
		t.Errorf("flags get through the source: %v\n%s", err, out)
	}
	audit, err := os.ReadFile(strings.TrimPrefix(source, "file://") + ".audit.jsonl")
	if err != nil || strings.Count(string(audit), "\n") != 2 {
		t.Errorf("audit beside the document: %v\n%s", err, audit)
	}
}

func adminRoute(ctx context.Context, adminURL string) (map[string]any, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, adminURL+"/v1/admin/routes?app="+app+"&room=probe&event=video.asset.ready", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var doc struct {
		Route map[string]any `json:"route"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, err
	}
	return doc.Route, nil
}

// logNon200 prints HAProxy's log lines of requests not answered 200.
func logNon200(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Log(err)
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, " public ") && !strings.Contains(line, " 200 ") {
			t.Logf("haproxy: %s", line)
		}
	}
}
