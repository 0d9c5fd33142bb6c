//go:build unix

package replicas

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// freePort returns a loopback port free at the time of the call.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// moduleRoot is the directory holding go.mod.
func moduleRoot(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		tb.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// proc is a child process in its own process group, killed (the whole
// group) at the end of the test; its output goes to a log file that the
// test prints when it fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(tb testing.TB, name, logPath string, env []string, bin string, args ...string) *proc {
	tb.Helper()
	lf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.kill()
		if tb.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			tb.Logf("--- last output of %s ---\n%s", name, b)
		}
	})
	return p
}

// kill sends SIGKILL to the process group and waits for the process.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitHTTP polls url until it answers (any status when anyStatus, else
// 200) or the deadline passes or p exits.
func waitHTTP(ctx context.Context, p *proc, url string, anyStatus bool) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if anyStatus || resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited before %s answered", p.name, url)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer: %w", url, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// inngestBinary returns the real Inngest dev server binary through the
// shared script (instant once built; building takes minutes the first time
// on a machine, so its bound is generous and separate from the test's).
func inngestBinary(root string) (string, error) {
	script := filepath.Join(root, "..", "shared", "tools", "inngest-dev.sh")
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("inngest dev script: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("inngest dev script: %w: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// startInngest runs the real Inngest dev server on free loopback ports and
// returns its base URL once it answers HTTP.
func startInngest(tb testing.TB, bin, dir string) string {
	tb.Helper()
	port := freePort(tb)
	args := []string{"dev", "--no-discovery", "--no-poll", "--host", "127.0.0.1", "--port", strconv.Itoa(port),
		"--connect-gateway-port", strconv.Itoa(freePort(tb)),
		"--connect-gateway-grpc-port", strconv.Itoa(freePort(tb)),
		"--connect-executor-grpc-port", strconv.Itoa(freePort(tb))}
	p := startProc(tb, "inngest dev", filepath.Join(dir, "inngest.log"), nil, bin, args...)
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := waitHTTP(ctx, p, url+"/", true); err != nil {
		tb.Fatal(err)
	}
	return url
}

// haproxyServer is one replica in the HAProxy template.
type haproxyServer struct {
	Name, Addr string
	AdminPort  int
}

// startHAProxy renders deploy/haproxy/haproxy.cfg.tmpl and runs haproxy
// on it in the foreground.
func startHAProxy(tb testing.TB, root, dir string, servers []haproxyServer) (publicURL, statsURL string) {
	tb.Helper()
	tmpl, err := template.ParseFiles(filepath.Join(root, "deploy", "haproxy", "haproxy.cfg.tmpl"))
	if err != nil {
		tb.Fatal(err)
	}
	listen := "127.0.0.1:" + strconv.Itoa(freePort(tb))
	stats := "127.0.0.1:" + strconv.Itoa(freePort(tb))
	var b bytes.Buffer
	if err := tmpl.Execute(&b, map[string]any{"Listen": listen, "Stats": stats, "Servers": servers}); err != nil {
		tb.Fatal(err)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, b.Bytes(), 0o644); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-f", cfg).CombinedOutput(); err != nil {
		tb.Fatalf("haproxy -c: %v\n%s\n%s", err, out, b.String())
	}
	p := startProc(tb, "haproxy", filepath.Join(dir, "haproxy.log"), nil, "haproxy", "-f", cfg, "-db")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitHTTP(ctx, p, "http://"+stats+"/stats", false); err != nil {
		tb.Fatal(err)
	}
	return "http://" + listen, "http://" + stats + "/stats;csv"
}

// serversUp returns the status (UP, DOWN...) of each backend server on the
// HAProxy stats page.
func serversUp(ctx context.Context, statsURL string) (map[string]string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, statsURL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	col := -1
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if strings.HasPrefix(sc.Text(), "# ") {
			for i, name := range f {
				if name == "status" {
					col = i
				}
			}
			continue
		}
		if col < 0 || len(f) <= col || f[0] != "switchyard" || f[1] == "BACKEND" {
			continue
		}
		out[f[1]] = strings.Fields(f[col] + " ")[0]
	}
	return out, sc.Err()
}

// waitServers waits until HAProxy reports each named server in state want
// (UP, DOWN).
func waitServers(ctx context.Context, statsURL string, want map[string]string) error {
	var last map[string]string
	for {
		got, err := serversUp(ctx, statsURL)
		if err == nil {
			ok := true
			for name, st := range want {
				if !strings.HasPrefix(got[name], st) {
					ok = false
				}
			}
			if ok {
				return nil
			}
			last = got
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("haproxy servers %v, want %v: %w", last, want, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// metricSum scrapes a gateway's /metrics and sums the samples of name
// (every label set).
func metricSum(ctx context.Context, adminURL, token, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, adminURL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("metrics: %s", resp.Status)
	}
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// buildOnce builds the gateway binary into dir (the test's one build).
func buildOnce(root, dir string) (string, error) {
	bin := filepath.Join(dir, "switchyard")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/switchyard")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

// background runs fn in a goroutine; wait returns its error.
type background struct {
	done chan struct{}
	err  error
}

func goBackground(fn func() error) *background {
	b := &background{done: make(chan struct{})}
	go func() {
		b.err = fn()
		close(b.done)
	}()
	return b
}

func (b *background) wait(ctx context.Context) error {
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return errors.Join(errors.New("background task not finished"), ctx.Err())
	}
}
