package legacyparty_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/switchyard/switchyard/legacyparty"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/upstream"
)

// BenchmarkPublish measures one publish to partytest over a shared
// keep-alive transport (server-side re-encoding included).
func BenchmarkPublish(b *testing.B) {
	srv := partytest.New().Start()
	defer srv.Close()
	c, err := legacyparty.NewClient(legacyparty.Config{URL: srv.URL()}, &http.Client{Transport: upstream.NewTransport(64)}, upstream.NewMetrics(nil), nil)
	if err != nil {
		b.Fatal(err)
	}
	m := mustMessage(b, "bench-room", "req", `{"assetId":"a1","status":"ready","n":1}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Publish(context.Background(), m); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
