package rawio

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns a wrapped connection accepted through Listener and the
// plain client end that dialed it.
func pair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wl := Listener(ln)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := wl.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := <-accepted
	rc, ok := c.(*Conn)
	if !ok {
		t.Fatalf("Listener gave a %T, want *Conn", c)
	}
	t.Cleanup(func() { _ = rc.Close(); _ = client.Close() })
	return rc, client.(*net.TCPConn)
}

// TestStreamBothWays: 24 MiB each way at once, more than the socket
// buffers hold, so writes are partial and wait for the peer; the bytes
// arrive whole and in order, with reads of every size.
func TestStreamBothWays(t *testing.T) {
	c, peer := pair(t)
	data := make([]byte, 24<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	want := sha256.Sum256(data)
	var wg sync.WaitGroup
	check := func(name string, r io.Reader) {
		defer wg.Done()
		h := sha256.New()
		buf := make([]byte, 1)
		total := 0
		for size := 1; total < len(data); size = size*3%65521 + 1 {
			if cap(buf) < size {
				buf = make([]byte, size)
			}
			n, err := r.Read(buf[:min(size, len(data)-total)])
			h.Write(buf[:n])
			total += n
			if err != nil {
				t.Errorf("%s: read after %d bytes: %v", name, total, err)
				return
			}
		}
		if !bytes.Equal(h.Sum(nil), want[:]) {
			t.Errorf("%s: the bytes differ", name)
		}
	}
	write := func(name string, w io.Writer) {
		defer wg.Done()
		if n, err := w.Write(data); n != len(data) || err != nil {
			t.Errorf("%s: wrote %d of %d: %v", name, n, len(data), err)
		}
	}
	wg.Add(4)
	go check("wrapped reads", c)
	go check("peer reads", peer)
	go write("wrapped writes", c)
	go write("peer writes", peer)
	wg.Wait()

	// End of stream: the peer's half-close is io.EOF, and the wrapped
	// connection's CloseWrite (the TCPConn's) is the peer's io.EOF.
	if err := peer.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("after the peer's CloseWrite: %d, %v; want 0, io.EOF", n, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := peer.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("peer after CloseWrite: %d, %v; want 0, io.EOF", n, err)
	}
}

// TestDeadlines: a read with nothing to read and a write the peer does not
// take end at their deadlines with the TCPConn's error (a timeout, and
// os.ErrDeadlineExceeded); the connection works again once the deadline
// is moved.
func TestDeadlines(t *testing.T) {
	c, peer := pair(t)
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	start := time.Now()
	n, err := c.Read(make([]byte, 16))
	if d := time.Since(start); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) || d < 90*time.Millisecond || d > 2*time.Second {
		t.Fatalf("read past its deadline: %d, %v after %v", n, err, d)
	}
	var ne net.Error
	var oe *net.OpError
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.As(err, &oe) || oe.Op != "read" {
		t.Errorf("read timeout %#v is not a net.Error timeout of op read", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if _, err := peer.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "again" {
		t.Fatalf("read after the deadline moved: %q, %v", buf[:n], err)
	}

	// The peer never reads: the write fills the buffers and stops at its
	// deadline, reporting what went out.
	_ = c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	big := make([]byte, 64<<20)
	start = time.Now()
	n, err = c.Write(big)
	if d := time.Since(start); !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= len(big) || d > 3*time.Second {
		t.Fatalf("write to a peer not reading: %d of %d, %v after %v", n, len(big), err, d)
	}
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Errorf("write timeout %#v is not an OpError of op write", err)
	}
}

// TestCloseAndReset: Close during a blocked Read ends it with
// net.ErrClosed; a peer's reset is ECONNRESET, as on a TCPConn.
func TestCloseAndReset(t *testing.T) {
	c, _ := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	_ = c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("read during Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a blocked Read")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v, want net.ErrClosed", err)
	}

	c2, peer := pair(t)
	_ = peer.SetLinger(0) // Close sends a reset
	_ = peer.Close()
	time.Sleep(50 * time.Millisecond)
	_, err := c2.Read(make([]byte, 8))
	var oe *net.OpError
	if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) {
		t.Errorf("read after the peer's reset: %v, want an OpError of ECONNRESET", err)
	}
}

// TestWrapLeavesOthers: anything but a *net.TCPConn is returned as it is.
func TestWrapLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Errorf("Wrap(net.Pipe end) = %T, want it unchanged", got)
	}
	if n, err := (&Conn{}).Read(nil); n != 0 || err != nil {
		t.Errorf("empty read: %d, %v", n, err)
	}
}
