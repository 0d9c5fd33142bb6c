package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// loadKey is the API key of the load generator's app.
const loadKey = "loadgen-key-0123456789abcdef"

// channelEvents are the channels and one event of each, as the gateway
// config declares them.
func channelEvents() [][2]string {
	return [][2]string{
		{"video-upload", "video.asset.attached"},
		{"video-ready", "video.asset.ready"},
		{"transcript", "transcript.ready"},
		{"ai-stream", "ai.message"},
	}
}

// buildGateway builds cmd/switchyard into dir and returns the binary path.
func buildGateway(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "switchyard")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/switchyard/switchyard/cmd/switchyard")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cmd/switchyard: %w\n%s", err, out)
	}
	return bin, nil
}

// validRev reports whether rev looks like a git revision name (no option
// or shell syntax): it is passed to git as an argument.
func validRev(rev string) bool {
	if rev == "" || len(rev) > 200 || rev[0] == '-' {
		return false
	}
	for _, r := range rev {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("._/~^-", r):
		default:
			return false
		}
	}
	return true
}

// buildBaseline exports the tree of commit rev (git archive, so the work
// tree is untouched) into dir/baseline-src and builds its cmd/switchyard.
// It returns the binary and the full commit id.
func buildBaseline(ctx context.Context, dir, rev string) (string, string, error) {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--verify", rev+"^{commit}").Output()
	if err != nil {
		return "", "", fmt.Errorf("baseline: git rev-parse %q: %w", rev, err)
	}
	commit := strings.TrimSpace(string(out))
	src := filepath.Join(dir, "baseline-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", "", fmt.Errorf("baseline: %w", err)
	}
	archive := exec.CommandContext(ctx, "git", "archive", "--format=tar", commit)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return "", "", fmt.Errorf("baseline: %w", err)
	}
	untar.Stdin = pipe
	if err := untar.Start(); err != nil {
		return "", "", fmt.Errorf("baseline: tar: %w", err)
	}
	if err := archive.Run(); err != nil {
		_ = untar.Wait()
		return "", "", fmt.Errorf("baseline: git archive %s: %w", commit, err)
	}
	if err := untar.Wait(); err != nil {
		return "", "", fmt.Errorf("baseline: tar: %w", err)
	}
	bin := filepath.Join(dir, "switchyard-baseline")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/switchyard")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("baseline: go build cmd/switchyard at %s: %w\n%s", commit, err, out)
	}
	return bin, commit, nil
}

// stageFlags returns a flagd flag file putting every channel at stage.
func stageFlags(stage string) string {
	variants := `{"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}`
	var b strings.Builder
	b.WriteString(`{"flags": {"realtime-killswitch": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}`)
	for _, ch := range []string{"video-upload", "video-ready", "transcript", "ai-stream", "default"} {
		fmt.Fprintf(&b, `, "realtime-%s": {"state": "ENABLED", "variants": %s, "defaultVariant": %q}`, ch, variants, stage)
	}
	b.WriteString("}}\n")
	return b.String()
}

// gatewayConfig is a gateway on 127.0.0.1:0 publishing to the fakes, logs
// at warn, comparator sampling off (the fakes have no subscriptions).
func gatewayConfig(partyURL, realtimeURL string) string {
	return gatewayConfigRate(partyURL, realtimeURL, 0)
}

// gatewayConfigRate is gatewayConfig with the comparator sampling rooms at
// rate.
func gatewayConfigRate(partyURL, realtimeURL string, rate float64) string {
	var chans strings.Builder
	for _, ce := range channelEvents() {
		fmt.Fprintf(&chans, "  - {name: %s, events: [%s]}\n", ce[0], ce[1])
	}
	return fmt.Sprintf(`env: test
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
log: {level: info, format: json}
flags: {provider: file, file: flags.json, pollInterval: 1s}
channels:
%sapps:
  loadgen:
    apiKeys: ["${LOADGEN_KEY}"]
    party: {url: %q, party: main}
    realtime: {url: %q, channel: "{room}"}
shadow: {sampleRate: %v}
server: {shutdownTimeout: 10s}
`, chans.String(), partyURL, realtimeURL, rate)
}

// child is one `switchyard serve` process.
type child struct {
	stage         string
	dir           string // holds its config and flag file
	cmd           *exec.Cmd
	public, admin string // base URLs
	pid           int

	mu   sync.Mutex
	tail []string // last log lines, for errors
	done chan struct{}
}

// startChild writes the config and flag file for stage into dir, starts
// bin, and waits for its "switchyard ready" log line. protocol is the
// gateway's upstream.protocol ("" leaves it out: a baseline build may not
// know the key).
func startChild(ctx context.Context, bin, dir, stage string, up *fakeUpstreams, protocol string) (*child, error) {
	return startChildConfig(ctx, bin, dir, stage, withProtocol(gatewayConfig(up.partyURL, up.realtimeURL), protocol), up.childEnv...)
}

// withProtocol adds upstream.protocol to a gateway config ("" and "auto",
// the default, leave it unchanged).
func withProtocol(cfg, protocol string) string {
	if protocol == "" || protocol == "auto" {
		return cfg
	}
	return cfg + "upstream: {protocol: " + protocol + "}\n"
}

// startChildConfig is startChild with the gateway config cfg; env is added
// to the process's environment.
func startChildConfig(ctx context.Context, bin, dir, stage, cfg string, env ...string) (*child, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "flags.json"), []byte(stageFlags(stage)), 0o644); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Env = append(append(os.Environ(), "LOADGEN_KEY="+loadKey), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s gateway: %w", stage, err)
	}
	c := &child{stage: stage, dir: dir, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	ready := make(chan [2]string, 1)
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			if len(c.tail) == 20 {
				c.tail = c.tail[1:]
			}
			c.tail = append(c.tail, line)
			c.mu.Unlock()
			if strings.Contains(line, `"switchyard ready"`) {
				var r struct{ Public, Admin string }
				if json.Unmarshal([]byte(line), &r) == nil {
					select {
					case ready <- [2]string{r.Public, r.Admin}:
					default:
					}
				}
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case a := <-ready:
		c.public, c.admin = "http://"+a[0], "http://"+a[1]
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("%s gateway exited before ready:\n%s", stage, c.logTail())
	case <-time.After(30 * time.Second):
		c.stop()
		return nil, fmt.Errorf("%s gateway not ready within 30s:\n%s", stage, c.logTail())
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
}

func (c *child) logTail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
}

// stop sends SIGTERM, waits up to 15s, then kills.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat (100
// on Linux everywhere Go runs).
const clockTicks = 100

// cpuTime returns the user+system CPU time the process has used.
func (c *child) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after ')' are
	// plain. utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("/proc/PID/stat: no ')'")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("/proc/PID/stat: too few fields")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/PID/stat: utime %q stime %q", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// metrics scrapes the admin /metrics and returns every unlabelled sample
// and every labelled one summed over its labels, by metric name.
func (c *child) metrics(hc *http.Client) (map[string]float64, error) {
	resp, err := hc.Get(c.admin + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape %s gateway: %w", c.stage, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s gateway: status %d", c.stage, resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format and sums samples by name
// (labels dropped).
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		j := strings.LastIndexByte(line, ' ')
		if j < 0 {
			return nil, fmt.Errorf("metrics: bad line %q", line)
		}
		v, err := strconv.ParseFloat(line[j+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: bad value in %q: %w", line, err)
		}
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

// metric scrapes one metric by name.
func (c *child) metric(hc *http.Client, name string) (float64, error) {
	m, err := c.metrics(hc)
	if err != nil {
		return 0, err
	}
	v, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("%s gateway: no metric %s", c.stage, name)
	}
	return v, nil
}

// setStage rewrites the child's flag file (atomically) to put every channel
// at stage and waits, at most 10 s, until its admin API resolves that stage.
func (c *child) setStage(ctx context.Context, hc *http.Client, stage string) error {
	path := filepath.Join(c.dir, "flags.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(stageFlags(stage)), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Get(c.admin + "/v1/admin/routes?app=loadgen&room=r&event=video.asset.ready")
		if err == nil {
			var r struct {
				Route struct{ Stage string }
			}
			err = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if err == nil && r.Route.Stage == stage {
				c.stage = stage
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s gateway: stage %s not in force within 10s (last error %v)", c.stage, stage, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
