//go:build race

package rawio

import (
	"io"
	"testing"
)

// TestRaceSeesTheKernelHandOff: memory written before a raw Write and read
// after the peer's standard Read of those bytes (and the other way round)
// is ordered for the race detector, as with a plain TCPConn. Without
// raceReleaseIO/raceAcquireIO this test reports a data race.
func TestRaceSeesTheKernelHandOff(t *testing.T) {
	c, peer := pair(t)
	var shared [2]int
	done := make(chan struct{})
	go func() {
		defer close(done)
		shared[0] = 1
		if _, err := c.Write([]byte{1}); err != nil {
			t.Error(err)
			return
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Error(err)
			return
		}
		if shared[1] != 2 {
			t.Error("the peer's write is not visible")
		}
	}()
	if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if shared[0] != 1 {
		t.Error("the wrapped write is not visible")
	}
	shared[1] = 2
	if _, err := peer.Write([]byte{2}); err != nil {
		t.Fatal(err)
	}
	<-done
}
