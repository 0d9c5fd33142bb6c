package recording

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/switchyard/switchyard/adminclient"
	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/shadow"
)

// MaxLineBytes bounds one recording line: the largest body the gateway
// accepts plus its fields, with room to spare.
const MaxLineBytes = 2 << 20

// Entry is one validated recording line.
type Entry struct {
	Line int // 1-based line number in the file
	Rec  Line
	At   time.Time
	// id is the requestId the replay sends (see replayRequestID).
	id string
}

// DecodeLine parses and validates one recording line: a single JSON
// object with the keys of Line and no others, t in RFC 3339, a room
// that passes broadcast.ValidateRoom, non-empty name and requestId of at
// most 256 bytes of UTF-8, an optional valid party name, and a body that is
// one JSON value. The error names the offending key.
func DecodeLine(b []byte) (Line, time.Time, error) {
	var rec Line
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return Line{}, time.Time{}, fmt.Errorf("not a recording object: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Line{}, time.Time{}, errors.New("trailing data after the JSON object")
	}
	if rec.T == "" {
		return Line{}, time.Time{}, errors.New("t: required")
	}
	at, err := time.Parse(time.RFC3339Nano, rec.T)
	if err != nil {
		return Line{}, time.Time{}, fmt.Errorf("t: %q is not an RFC 3339 time", rec.T)
	}
	if rec.App == "" {
		return Line{}, time.Time{}, errors.New("app: required")
	}
	if err := broadcast.ValidateRoom(rec.Room); err != nil {
		var be *broadcast.Error
		if errors.As(err, &be) {
			err = errors.New(be.Message) // "room: ...", without the API code
		}
		return Line{}, time.Time{}, err
	}
	for _, f := range []struct{ key, v string }{{"name", rec.Name}, {"requestId", rec.RequestID}} {
		if f.v == "" {
			return Line{}, time.Time{}, fmt.Errorf("%s: required", f.key)
		}
		if len(f.v) > 256 || !utf8.ValidString(f.v) {
			return Line{}, time.Time{}, fmt.Errorf("%s: must be valid UTF-8 of at most 256 bytes", f.key)
		}
	}
	if rec.Party != "" {
		if err := legacyparty.ValidateParty(rec.Party); err != nil {
			return Line{}, time.Time{}, fmt.Errorf("party: %w", err)
		}
	}
	if len(bytes.TrimSpace(rec.Body)) == 0 {
		return Line{}, time.Time{}, errors.New("body: required")
	}
	return rec, at, nil
}

// Read reads and validates a whole recording; blank lines are
// skipped. The error names the first bad line by number.
func Read(r io.Reader) ([]Entry, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineBytes)
	var out []Entry
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		rec, at, err := DecodeLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, Entry{Line: n, Rec: rec, At: at})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", n+1, MaxLineBytes)
		}
		return nil, fmt.Errorf("line %d: %w", n+1, err)
	}
	if len(out) == 0 {
		return nil, errors.New("no message in the recording")
	}
	return out, nil
}

// replayRequestID derives the requestId of a replayed message: the
// original with "-replay-<run>" appended, so that a replay is not refused
// as a duplicate of the recorded traffic or of another run. An original
// that several lines share (the drop-in path has no idempotency: every
// ai.message chunk of one answer may carry the same requestId) also gets
// "-<line>", since /v1/broadcast would refuse the repeats. An original too
// long for that is shortened to a digest.
func replayRequestID(orig, run string, line int, shared bool) string {
	suffix := "-replay-" + run
	if shared {
		suffix += "-" + strconv.Itoa(line)
	}
	if len(orig)+len(suffix) <= 256 {
		return orig + suffix
	}
	sum := sha256.Sum256([]byte(orig))
	return hex.EncodeToString(sum[:12]) + suffix
}

// ReplayOptions are the settings of one replay (the flags of `switchyard
// replay`).
type ReplayOptions struct {
	// File names the recording in messages.
	File string
	// App is the app whose messages are replayed; Key is its API key.
	App, Key string
	// Speed scales time: 2 is twice as fast, 0 as fast as possible.
	Speed float64
	// Concurrency is the most requests in flight (at least 1).
	Concurrency int
	// Settle is the longest wait for the comparator to decide the replayed
	// messages (when the client has an admin URL).
	Settle time.Duration
	// ProgressEvery is the period of the progress line when stdout is not
	// a terminal.
	ProgressEvery time.Duration
	// RunID is appended to every requestId; empty draws a random one.
	RunID string
}

// replayStats are the client-side counts of a replay; safe for concurrent
// use.
type replayStats struct {
	sent, ok atomic.Int64
	mu       sync.Mutex
	byStatus map[string]int // failures by status ("429", "network")
	byStage  map[broadcast.Stage]int
	firstErr []string
}

func (s *replayStats) fail(status, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byStatus[status]++
	if len(s.firstErr) < 5 {
		s.firstErr = append(s.firstErr, detail)
	}
}

func (s *replayStats) stage(st broadcast.Stage) {
	s.mu.Lock()
	s.byStage[st]++
	s.mu.Unlock()
}

// Replay sends the entries of o.App through c's public API
// (POST /v1/broadcast), one goroutine per room (so a room's messages go in
// recorded order, each after the previous one was answered), each message
// due at start + (t - t0)/speed, at most o.Concurrency requests in flight.
// With an admin URL in c it then prints the comparator's parity for the
// replayed traffic. Progress and results go to stdout. It returns an error
// when any message failed or ctx ended first.
func Replay(ctx context.Context, o ReplayOptions, all []Entry, c *adminclient.Client, stdout io.Writer) error {
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 2 * time.Second
	}
	var entries []Entry
	apps := map[string]int{}
	for _, e := range all {
		if e.Rec.App == o.App {
			entries = append(entries, e)
		} else {
			apps[e.Rec.App]++
		}
	}
	if len(entries) == 0 {
		return fmt.Errorf("replay: %s has no message of app %q (apps in it: %s)", o.File, o.App, mapKeys(apps))
	}
	if o.RunID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		o.RunID = hex.EncodeToString(b[:])
	}
	uses := map[string]int{}
	for _, e := range entries {
		uses[e.Rec.RequestID]++
	}
	for i := range entries {
		e := &entries[i]
		e.id = replayRequestID(e.Rec.RequestID, o.RunID, e.Line, uses[e.Rec.RequestID] > 1)
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].At.Before(entries[j].At) })
	rooms := map[string][]Entry{}
	var roomOrder []string
	for _, e := range entries {
		if _, ok := rooms[e.Rec.Room]; !ok {
			roomOrder = append(roomOrder, e.Rec.Room)
		}
		rooms[e.Rec.Room] = append(rooms[e.Rec.Room], e)
	}
	span := entries[len(entries)-1].At.Sub(entries[0].At)
	speed := "as fast as possible"
	if o.Speed > 0 {
		speed = fmt.Sprintf("speed %gx (about %s)", o.Speed, scale(span, o.Speed).Round(time.Millisecond))
	}
	fmt.Fprintf(stdout, "replay %s: %d messages of app %s in %d rooms, recorded over %s; run %s, %s\n",
		o.File, len(entries), o.App, len(rooms), span.Round(time.Millisecond), o.RunID, speed)
	if len(apps) > 0 {
		fmt.Fprintf(stdout, "skipped %d messages of other apps (%s)\n", len(all)-len(entries), mapKeys(apps))
	}

	var before []shadow.ChannelSummary
	if c.Admin != "" {
		var err error
		if before, err = fetchSummary(ctx, c, o.App); err != nil {
			return fmt.Errorf("replay: parity summary before the replay: %w", err)
		}
	}

	st := &replayStats{byStatus: map[string]int{}, byStage: map[broadcast.Stage]int{}}
	sem := make(chan struct{}, o.Concurrency)
	start := time.Now()
	t0 := entries[0].At
	prog := newProgress(stdout, len(entries), o.ProgressEvery)
	progDone := make(chan struct{})
	go func() { prog.run(ctx, st, start); close(progDone) }()
	var wg sync.WaitGroup
	for _, room := range roomOrder {
		wg.Add(1)
		go func(list []Entry) {
			defer wg.Done()
			for _, e := range list {
				if o.Speed > 0 {
					if !sleepCtx(ctx, time.Until(start.Add(scale(e.At.Sub(t0), o.Speed)))) {
						return
					}
				}
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				sendReplay(ctx, c, o, e, st)
				<-sem
			}
		}(rooms[room])
	}
	wg.Wait()
	prog.stop()
	<-progDone
	prog.draw(st, start, true)
	if ctx.Err() != nil {
		return fmt.Errorf("replay interrupted after %d of %d messages: %w", st.sent.Load(), len(entries), ctx.Err())
	}

	sent, ok := st.sent.Load(), st.ok.Load()
	fmt.Fprintf(stdout, "sent %d, ok %d, failed %d%s; stages: %s\n", sent, ok, sent-ok, statusList(st.byStatus), stageList(st.byStage))
	for _, d := range st.firstErr {
		fmt.Fprintf(stdout, "  %s\n", d)
	}
	if c.Admin != "" {
		expected := int64(st.byStage[broadcast.StageShadow] + st.byStage[broadcast.StageDual])
		after, err := settleSummary(ctx, c, o, before, expected)
		if err != nil {
			return fmt.Errorf("replay: parity summary after the replay: %w", err)
		}
		printParity(stdout, o.App, before, after)
	} else {
		fmt.Fprintln(stdout, "no --admin: comparator parity not shown")
	}
	if sent != ok {
		return fmt.Errorf("replay: %d of %d messages failed", sent-ok, sent)
	}
	return nil
}

func scale(d time.Duration, speed float64) time.Duration {
	return time.Duration(float64(d) / speed)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// sendReplay posts one message, retrying up to 3 attempts on network
// errors, 429 (after Retry-After, at most 5 s) and 503. Retrying is safe:
// the requestId makes the gateway answer a repeat as a duplicate.
func sendReplay(ctx context.Context, c *adminclient.Client, o ReplayOptions, e Entry, st *replayStats) {
	msg := adminclient.BroadcastRequest{Room: e.Rec.Room, Name: e.Rec.Name, Body: e.Rec.Body, RequestID: e.id}
	st.sent.Add(1)
	where := fmt.Sprintf("line %d (room %s, %s)", e.Line, e.Rec.Room, e.Rec.Name)
	for attempt := 1; ; attempt++ {
		ans, err := c.Broadcast(ctx, o.Key, msg)
		if err == nil {
			for t, d := range ans.Deliveries {
				if d.Status == "duplicate" && attempt == 1 {
					st.fail("duplicate", fmt.Sprintf("%s: %s answered duplicate for requestId %s", where, t, e.id))
					return
				}
			}
			st.ok.Add(1)
			st.stage(ans.Stage)
			return
		}
		var ae *adminclient.Error
		if !errors.As(err, &ae) {
			if attempt < 3 && ctx.Err() == nil {
				sleepCtx(ctx, time.Duration(attempt)*200*time.Millisecond)
				continue
			}
			st.fail("network", where+": "+err.Error())
			return
		}
		if (ae.Status == http.StatusTooManyRequests || ae.Status == http.StatusServiceUnavailable) && attempt < 3 {
			wait := time.Second
			if ae.HasRetryAfter {
				wait = min(ae.RetryAfter, 5*time.Second)
			}
			if sleepCtx(ctx, wait) {
				continue
			}
		}
		detail := ae.Message
		if ae.Code != "" {
			detail = ae.Code + ": " + ae.Message
		}
		st.fail(strconv.Itoa(ae.Status), fmt.Sprintf("%s: %d %s", where, ae.Status, detail))
		return
	}
}

func mapKeys[V any](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

func statusList(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func stageList(m map[broadcast.Stage]int) string {
	var parts []string
	for _, s := range broadcast.Stages {
		if m[s] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", s, m[s]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// progress draws the replay's progress: one line redrawn with \r on a
// terminal, a line every period otherwise.
type progress struct {
	w      io.Writer
	total  int
	tty    bool
	every  time.Duration
	quit   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	lastLn int
}

func newProgress(w io.Writer, total int, every time.Duration) *progress {
	p := &progress{w: w, total: total, tty: isTerminal(w), every: every, quit: make(chan struct{})}
	if p.tty {
		p.every = 100 * time.Millisecond
	}
	return p
}

func (p *progress) run(ctx context.Context, st *replayStats, start time.Time) {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.draw(st, start, false)
		case <-p.quit:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (p *progress) stop() { p.once.Do(func() { close(p.quit) }) }

func (p *progress) draw(st *replayStats, start time.Time, final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sent, ok := int(st.sent.Load()), int(st.ok.Load())
	const width = 30
	filled := 0
	if p.total > 0 {
		filled = sent * width / p.total
	}
	line := fmt.Sprintf("[%s%s] %d/%d %3d%%  ok %d  failed %d  %s",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), sent, p.total, sent*100/max(p.total, 1),
		ok, sent-ok, time.Since(start).Round(100*time.Millisecond))
	switch {
	case p.tty:
		pad := ""
		if n := p.lastLn - len(line); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		p.lastLn = len(line)
		fmt.Fprintf(p.w, "\r%s%s", line, pad)
		if final {
			fmt.Fprintln(p.w)
		}
	default:
		fmt.Fprintln(p.w, line)
	}
}

// isTerminal reports whether w is a terminal (golang.org/x/term: a
// character device that answers terminal ioctls, so /dev/null is not one).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// fetchSummary reads the comparator's summary rows of app.
func fetchSummary(ctx context.Context, c *adminclient.Client, app string) ([]shadow.ChannelSummary, error) {
	s, err := c.ShadowSummary(ctx)
	if err != nil {
		return nil, err
	}
	return s.For(app), nil
}

// settleSummary polls the summary until the replayed messages of compared
// stages have an outcome each (the comparator decides a missing copy only
// at its timeout) or o.Settle has passed, and returns the last summary.
func settleSummary(ctx context.Context, c *adminclient.Client, o ReplayOptions, before []shadow.ChannelSummary, expected int64) ([]shadow.ChannelSummary, error) {
	deadline := time.Now().Add(o.Settle)
	for {
		after, err := fetchSummary(ctx, c, o.App)
		if err != nil {
			return nil, err
		}
		var decided int64
		for _, d := range diffSummaries(before, after) {
			for oc, n := range d.Outcomes {
				if oc.Decided() {
					decided += n
				}
			}
		}
		if decided >= expected || !time.Now().Before(deadline) {
			return after, nil
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// diffSummaries returns after minus before per channel (counts only),
// negative differences clamped to 0 (the sliding window may have rotated
// old counts out).
func diffSummaries(before, after []shadow.ChannelSummary) []shadow.ChannelSummary {
	prev := map[string]shadow.ChannelSummary{}
	for _, b := range before {
		prev[b.Channel] = b
	}
	var out []shadow.ChannelSummary
	for _, a := range after {
		d := shadow.ChannelSummary{App: a.App, Channel: a.Channel, Outcomes: map[shadow.Outcome]int64{}}
		for oc, n := range a.Outcomes {
			d.Outcomes[oc] = max(0, n-prev[a.Channel].Outcomes[oc])
		}
		d.Compared = max(0, a.Compared-prev[a.Channel].Compared)
		out = append(out, d)
	}
	return out
}

// printParity prints the comparator's per-channel figures for the replayed
// traffic.
func printParity(w io.Writer, app string, before, after []shadow.ChannelSummary) {
	diff := diffSummaries(before, after)
	diff = slices.DeleteFunc(diff, func(d shadow.ChannelSummary) bool {
		var n int64
		for _, v := range d.Outcomes {
			n += v
		}
		return n == 0
	})
	if len(diff) == 0 {
		fmt.Fprintf(w, "parity (comparator, app %s): no replayed message was compared (stages legacy/realtime, or sampled out)\n", app)
		return
	}
	fmt.Fprintf(w, "parity of the replayed traffic (comparator, app %s):\n", app)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "channel\tcompared\tmatch\tmismatch\tprecision_loss\tmissing_legacy\tmissing_realtime\tunobserved\tdropped\tduplicate\treordered\tparity %\t")
	for _, d := range diff {
		par := "-"
		if d.Compared > 0 {
			par = fmt.Sprintf("%.1f", 100*float64(d.Outcomes[shadow.OutcomeMatch])/float64(d.Compared))
		}
		oc := d.Outcomes
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", d.Channel, d.Compared,
			oc[shadow.OutcomeMatch], oc[shadow.OutcomeMismatch], oc[shadow.OutcomePrecisionLoss],
			oc[shadow.OutcomeMissingLegacy], oc[shadow.OutcomeMissingRealtime], oc[shadow.OutcomeUnobserved],
			oc[shadow.OutcomeDropped], oc[shadow.OutcomeDuplicate], oc[shadow.OutcomeReordered], par)
	}
	_ = tw.Flush()
}
