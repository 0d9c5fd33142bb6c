package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestQuickBenchEndToEnd runs the quick mode against the real binary and
// checks that the report has every figure, measured and non-zero, and that
// the table prints each one with its verdict. It does not judge the
// targets: timing is not asserted in unit tests.
func TestQuickBenchEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and loads the gateway for ~20s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	r, err := bench(ctx, quickOptions(), &out)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	t.Log(out.String())
	if got, want := len(r.figures), 35; got != want {
		t.Errorf("report has %d figures, want %d", got, want)
	}
	for _, f := range r.figures {
		if len(f.samples) == 0 {
			t.Errorf("figure %s has no sample", f.key)
			continue
		}
		if f.median() == 0 && f.key != "upstream_conns" { // 0 new connections is the expected value
			t.Errorf("figure %s is zero", f.key)
		}
		if !strings.Contains(out.String(), f.label) {
			t.Errorf("table lacks %q", f.label)
		}
	}
	for _, key := range []string{"tput_shadow_vs_direct", "tput_shadow_vs_legacy", "added_p50_1", "added_p99_4",
		"p99_hung_vs_healthy", "p99_failing_vs_healthy", "allocs_per_msg", "allocs_per_msg_legacy", "heap_per_inflight", "goroutines_after",
		"cmp_p99_healthy", "cmp_p99_hung", "cmp_p99_hung_vs_legacy", "first_cost_shadow", "first_cost_dual"} {
		f := r.get(key)
		if f == nil {
			t.Errorf("no figure %s", key)
			continue
		}
		if f.cmp == "" {
			t.Errorf("figure %s has no target", key)
		}
	}
	if !strings.Contains(out.String(), "met") {
		t.Error("the table gives no verdict")
	}
}

func TestParseOptions(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		wantErr bool
		check   func(o options) bool
	}{
		{nil, false, func(o options) bool { return o.rounds == 12 && o.callers == 32 && !o.quick }},
		{[]string{"-quick"}, false, func(o options) bool { return o.quick && o.rounds == 1 && o.duration == 250*time.Millisecond }},
		{[]string{"-quick", "-rounds", "3"}, false, func(o options) bool { return o.quick && o.rounds == 3 }},
		{[]string{"-rounds", "2", "-duration", "1s", "-callers", "8"}, false, func(o options) bool {
			return o.rounds == 2 && o.duration == time.Second && o.callers == 8
		}},
		{[]string{"-rounds", "0"}, true, nil},
		{[]string{"-duration", "1ms"}, true, nil},
		{[]string{"-callers", "100000"}, true, nil},
		{[]string{"extra"}, true, nil},
		{[]string{"-nope"}, true, nil},
		{nil, false, func(o options) bool { return o.partykit && o.partyCallers == 8 }},
		{[]string{"-quick"}, false, func(o options) bool { return !o.partykit }},
		{[]string{"-quick", "-partykit"}, false, func(o options) bool { return o.partykit }},
		{[]string{"-partykit=false"}, false, func(o options) bool { return !o.partykit }},
		{[]string{"-baseline", "8877c28"}, false, func(o options) bool { return o.baseline == "8877c28" }},
		{[]string{"-baseline", "main~2"}, false, func(o options) bool { return o.baseline == "main~2" }},
		{[]string{"-baseline", "--upload-pack=x"}, true, nil},
		{[]string{"-baseline", "a b"}, true, nil},
		{[]string{"-baseline", "$(id)"}, true, nil},
	} {
		o, err := parseOptions(tt.args, io.Discard)
		if gotErr := err != nil; gotErr != tt.wantErr {
			t.Errorf("parseOptions(%q) error = %v, want error %v", tt.args, err, tt.wantErr)
			continue
		}
		if tt.check != nil && !tt.check(o) {
			t.Errorf("parseOptions(%q) = %+v", tt.args, o)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
go_memstats_mallocs_total 1.5e+06
switchyard_offpath_queue_depth{transport="legacy"} 3
switchyard_offpath_queue_depth{transport="realtime"} 4
switchyard_x{a="b c"} 1
`
	got, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"go_goroutines": 42, "go_memstats_mallocs_total": 1.5e6, "switchyard_offpath_queue_depth": 7, "switchyard_x": 1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if _, err := parseMetrics(strings.NewReader("metric notanumber\n")); err == nil {
		t.Error("a bad value was accepted")
	}
}

func TestStats(t *testing.T) {
	if got, want := median([]float64{3, 1, 2}), 2.0; got != want {
		t.Errorf("median odd = %v, want %v", got, want)
	}
	if got, want := median([]float64{4, 1, 3, 2}), 2.5; got != want {
		t.Errorf("median even = %v, want %v", got, want)
	}
	if got, want := rotate([]int{1, 2, 3}, 4), []int{2, 3, 1}; !equal(got, want) {
		t.Errorf("rotate = %v, want %v", got, want)
	}
	r := phaseResult{lat: []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}
	if got, want := r.quantile(0.5), time.Duration(5); got != want {
		t.Errorf("p50 = %v, want %v", got, want)
	}
	if got, want := r.quantile(0.99), time.Duration(10); got != want {
		t.Errorf("p99 = %v, want %v", got, want)
	}
	f := figure{samples: []float64{1}, cmp: "<=", target: 0.5}
	if f.met() {
		t.Error("1 <= 0.5 reported met")
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFakeRealtimeModes checks the fault switches the fault rounds rely on.
func TestFakeRealtimeModes(t *testing.T) {
	up, err := startUpstreams()
	if err != nil {
		t.Fatal(err)
	}
	defer up.close()
	hc := newClient(2)
	defer hc.CloseIdleConnections()
	url := up.realtimeURL + "/v1/realtime/publish?channel=c&topic=t"
	if err := post(context.Background(), hc, url, "application/json", "", []byte(`{}`)); err != nil {
		t.Fatalf("healthy: %v", err)
	}
	up.setMode(modeFail)
	if err := post(context.Background(), hc, url, "application/json", "", []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("failing: err = %v, want a 500", err)
	}
	up.setMode(modeHang)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := post(ctx, hc, url, "application/json", "", []byte(`{}`)); err == nil {
		t.Fatal("hung: answered")
	}
	done := make(chan error, 1)
	go func() { done <- post(context.Background(), hc, url, "application/json", "", []byte(`{}`)) }()
	deadline := time.Now().Add(5 * time.Second)
	for up.hungN.Load() < 2 { // the request above and this one hang
		if time.Now().After(deadline) {
			t.Fatal("the second request never reached the hung handler")
		}
		time.Sleep(5 * time.Millisecond)
	}
	up.setMode(modeHealthy) // releases the hung request
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("released: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a hung request was not released")
	}
	resp, err := hc.Post(up.realtimeURL+"/v1/realtime/publish", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("publish without channel = %d, want 400", resp.StatusCode)
	}
}
