package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// target is what one caller operation does.
type target int

const (
	targetDirectBoth  target = iota // POST to PartyKit, then to Realtime, from the client
	targetDirectParty               // POST to PartyKit only
	targetGateway                   // POST /v1/broadcast to a gateway
	targetDropIn                    // POST the envelope to a gateway's PartyKit drop-in path
)

// newClient returns the load generator's shared client: keep-alive pools
// sized to the largest concurrency, no compression, HTTP/1.1.
func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns * 8,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}, Timeout: 30 * time.Second}
}

// phase is one timed run of callers against one target.
type phase struct {
	name     string
	target   target
	gateway  *child // for targetGateway and targetDropIn
	partyURL string // for targetDirectParty: instead of the fake's
	callers  int
	duration time.Duration
}

// phaseResult is what one phase measured.
type phaseResult struct {
	ok, failed int
	elapsed    time.Duration
	lat        []time.Duration // sorted, successful operations only
}

func (r phaseResult) throughput() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

// quantile returns the q quantile (0..1) of the sorted latencies.
func (r phaseResult) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(q*float64(len(r.lat)) + 0.5)
	return r.lat[min(max(i-1, 0), len(r.lat)-1)]
}

// runner drives phases. run is its only method; it may be called from one
// goroutine at a time.
type runner struct {
	hc  *http.Client
	up  *fakeUpstreams
	seq uint64 // distinct requestIds across phases
}

// run drives p.callers goroutines, each publishing one message after the
// other to its own room until p.duration has passed, and returns the
// successful count, failures, wall time and sorted latencies.
func (rn *runner) run(ctx context.Context, p phase) phaseResult {
	rn.seq++
	end := time.Now().Add(p.duration)
	results := make([]phaseResult, p.callers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range p.callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = rn.caller(ctx, p, i, end)
		}()
	}
	wg.Wait()
	var out phaseResult
	out.elapsed = time.Since(start)
	for _, r := range results {
		out.ok += r.ok
		out.failed += r.failed
		out.lat = append(out.lat, r.lat...)
	}
	slices.Sort(out.lat)
	return out
}

// caller is one sequential client until end; its room is its own so that
// the gateway's per-room ordering does not serialise callers. Requests in
// flight at end are completed and counted.
func (rn *runner) caller(ctx context.Context, p phase, id int, end time.Time) phaseResult {
	res := phaseResult{lat: make([]time.Duration, 0, 4096)}
	room := "room-" + strconv.Itoa(id)
	event, channel := "video.asset.ready", "video-ready"
	partyURL := rn.up.partyURL + "/parties/main/" + room
	if p.partyURL != "" {
		partyURL = p.partyURL + "/parties/main/" + room
	}
	rtURL := rn.up.realtimeURL + "/v1/realtime/publish?channel=" + room + "&topic=" + channel
	var gwURL string
	if p.gateway != nil {
		gwURL = p.gateway.public + "/v1/broadcast"
		if p.target == targetDropIn {
			gwURL = p.gateway.public + "/apps/loadgen/parties/main/" + room
		}
	}
	var buf []byte
	for n := 0; ctx.Err() == nil && time.Now().Before(end); n++ {
		reqID := "lg-" + strconv.FormatUint(rn.seq, 10) + "-" + strconv.Itoa(id) + "-" + strconv.Itoa(n)
		t0 := time.Now()
		var err error
		switch p.target {
		case targetGateway:
			buf = appendBroadcast(buf[:0], room, event, reqID)
			err = post(ctx, rn.hc, gwURL, "application/json", loadKey, buf)
		case targetDropIn:
			buf = appendEnvelope(buf[:0], event, reqID)
			err = post(ctx, rn.hc, gwURL, "text/plain;charset=UTF-8", "", buf)
		case targetDirectParty, targetDirectBoth:
			buf = appendEnvelope(buf[:0], event, reqID)
			err = post(ctx, rn.hc, partyURL, "text/plain;charset=UTF-8", "", buf)
			if err == nil && p.target == targetDirectBoth {
				err = post(ctx, rn.hc, rtURL, "application/json", "", buf)
			}
		}
		d := time.Since(t0)
		switch {
		case err == nil:
			res.ok++
			res.lat = append(res.lat, d)
		case ctx.Err() != nil:
			// Cancelled: not counted.
		default:
			res.failed++
		}
	}
	return res
}

// body is the message body every operation sends: a typical small event.
const body = `{"id":"asset-8f2c","playbackId":"pb-31e9","duration":312.5,"status":"ready","tracks":[{"type":"video","w":1920,"h":1080},{"type":"audio","lang":"en"}]}`

func appendBroadcast(b []byte, room, event, reqID string) []byte {
	b = append(b, `{"room":"`...)
	b = append(b, room...)
	b = append(b, `","name":"`...)
	b = append(b, event...)
	b = append(b, `","body":`...)
	b = append(b, body...)
	b = append(b, `,"requestId":"`...)
	b = append(b, reqID...)
	return append(b, `"}`...)
}

// appendEnvelope is the PartyKit envelope an app posts today.
func appendEnvelope(b []byte, event, reqID string) []byte {
	b = append(b, `{"body":`...)
	b = append(b, body...)
	b = append(b, `,"requestId":"`...)
	b = append(b, reqID...)
	b = append(b, `","name":"`...)
	b = append(b, event...)
	return append(b, `"}`...)
}

// post sends one request and reads the whole answer; a non-2xx answer is
// an error.
func post(ctx context.Context, hc *http.Client, url, contentType, key string, b []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: status %d", url, resp.StatusCode)
	}
	return err
}
