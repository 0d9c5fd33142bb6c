package flags

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature/isolated"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard/switchyard/broadcast"
)

func TestParseBlobSource(t *testing.T) {
	tests := []struct {
		src, bucket, key, err string
	}{
		{"s3://flags-bucket/prod/flags.json?region=eu-west-1", "s3://flags-bucket?region=eu-west-1", "prod/flags.json", ""},
		{"gs://b/flags.json", "gs://b", "flags.json", ""},
		{"azblob://container/env/flags.json", "azblob://container", "env/flags.json", ""},
		{"file:///var/lib/switchyard/flags.json", "file:///var/lib/switchyard", "flags.json", ""},
		{"http://host/flags.json", "", "", "scheme must be s3, gs, azblob or file"},
		{"s3:///flags.json", "", "", "no bucket"},
		{"s3://b/flags.yaml", "", "", "must name a .json file"},
		{"file://relative/flags.json", "", "", "file:///absolute/dir/flags.json"},
		{"::", "", "", "is not a URL"},
	}
	for _, tt := range tests {
		b, k, err := ParseBlobSource(tt.src)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: %v, want an error containing %q", tt.src, err, tt.err)
			}
			continue
		}
		if err != nil || b != tt.bucket || k != tt.key {
			t.Errorf("%s: %q %q %v, want %q %q", tt.src, b, k, err, tt.bucket, tt.key)
		}
	}
}

// newBlobFixture writes data as the shared document in a temp directory
// and starts n providers (replicas) on it, each with its resolver.
func newBlobFixture(t *testing.T, data []byte, n int) (source string, rs []*Resolver, ms []*Metrics) {
	t.Helper()
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "flags.json"), data)
	source = "file://" + dir + "/flags.json"
	for range n {
		cfg := Config{Provider: ProviderBlob, Source: source, Env: "dev", Channels: testChannels, PollInterval: 100 * time.Millisecond}
		m := NewMetrics(prometheus.NewRegistry())
		p, err := NewProvider(cfg, nil, WithMetrics(m))
		if err != nil {
			t.Fatalf("NewProvider: %v", err)
		}
		r := NewResolver(cfg, startClient(t, p), m, nil)
		t.Cleanup(func() { _ = r.Close() })
		rs, ms = append(rs, r), append(ms, m)
	}
	return source, rs, ms
}

// A change committed to the blob source (as `switchyard flags set` does)
// reaches every replica, with its audit record beside the document; an
// invalid document written to the source is never applied.
func TestBlobSourceSharedByReplicas(t *testing.T) {
	source, rs, ms := newBlobFixture(t, stagesDoc(t, "off", map[string]string{"video-ready": "legacy"}), 3)
	q := broadcast.RouteQuery{App: "a", Room: "r", Channel: "video-ready"}
	for i, r := range rs {
		if got := r.Resolve(q).Stage; got != broadcast.StageLegacy {
			t.Fatalf("replica %d before: %s", i, got)
		}
	}
	ctx := context.Background()
	st, err := OpenBlob(ctx, source)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ch, err := PrepareBlobChange(ctx, st, "dev", FlagKey("video-ready"), "shadow")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ch.Diff, `+    "realtime-video-ready"`) && !strings.Contains(ch.Diff, `"shadow"`) {
		t.Errorf("diff does not show the change:\n%s", ch.Diff)
	}
	if err := ch.Commit("", AuditRecord{User: "oncall", Reason: "shadow video-ready"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		waitFor(t, 3*time.Second, "replica to see the flip", func() bool { return r.Resolve(q).Stage == broadcast.StageShadow })
	}
	recs, err := ReadAuditBlob(ctx, source)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Flag != FlagKey("video-ready") || recs[0].From != "legacy" || recs[0].To != "shadow" || recs[0].File != source {
		t.Fatalf("audit = %+v, want one record legacy -> shadow of %s", recs, source)
	}

	// An invalid document is refused by every replica: the last good
	// flags stay, switchyard_flag_file_valid drops to 0.
	path := strings.TrimPrefix(source, "file://")
	bad := strings.Replace(string(stagesDoc(t, "off", map[string]string{"video-ready": "realtime"})), `"realtime":"realtime"`, `"realtime":"nope"`, 1)
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		waitFor(t, 3*time.Second, "replica to refuse the invalid document", func() bool { return testutil.ToFloat64(m.fileValid) == 0 })
		if got := rs[i].Resolve(q).Stage; got != broadcast.StageShadow {
			t.Fatalf("replica %d applied an invalid document: %s", i, got)
		}
	}
	// The kill switch through the source.
	if err := os.WriteFile(path, stagesDoc(t, "off", map[string]string{"video-ready": "shadow"}), 0o644); err != nil {
		t.Fatal(err)
	}
	ch, err = PrepareBlobChange(ctx, st, "dev", KillSwitchKey, "on")
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Commit("", AuditRecord{User: "oncall", Reason: "incident"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		waitFor(t, 3*time.Second, "replica to see the kill switch", func() bool { return r.Resolve(q).KillSwitch })
	}
	if recs, _ := ReadAuditBlob(ctx, source); len(recs) != 2 {
		t.Errorf("audit records = %d, want 2", len(recs))
	}
}

// A source whose document is invalid at start fails the provider's start
// with the validation error; a missing one with the read error.
func TestBlobSourceRefusesInvalidAtStart(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "flags.json"), doc(t, map[string]string{KillSwitchKey: killFlag("off", "")}))
	for _, tt := range []struct{ source, want string }{
		{"file://" + dir + "/flags.json", "flags.realtime-default: missing"},
		{"file://" + dir + "/absent.json", "absent.json"},
	} {
		p, err := NewProvider(Config{Provider: ProviderBlob, Source: tt.source, Env: "dev"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		api := isolated.NewAPI()
		err = api.SetProviderAndWait(context.Background(), p)
		_ = api.Shutdown(context.Background())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: SetProviderAndWait = %v, want an error containing %q", tt.source, err, tt.want)
		}
	}
}
