// Package rawio gives TCP connections whose Read and Write make their
// system calls without telling the Go scheduler they are in one.
//
// Why: a goroutine in a system call gives its P up to be retaken. The
// runtime's monitor thread (sysmon) checks every 20 us and hands the P of
// a call that spans two checks to another thread, which it must wake; each
// such retake also keeps the monitor at its 20 us period instead of backing
// off. On loopback and on a busy virtual machine a socket write runs the
// peer's TCP receive path inline and takes 10-30 us, so a gateway doing
// nothing but small socket reads and writes spent 13 % of its CPU in the
// monitor alone (perf, legacy stage, docs/performance.md).
//
// A read or write of a non-blocking socket never sleeps: it copies what
// fits and returns, or returns EAGAIN, on which the connection waits in the
// netpoller as net.Conn does (syscall.RawConn). So these calls are made
// with syscall.RawSyscall, holding the P for their few microseconds, as the
// runtime does for its own non-blocking calls. Everything else (deadlines,
// Close, CloseWrite, addresses, keep-alive) is the *net.TCPConn's.
package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a *net.TCPConn whose Read and Write make raw system calls (see
// the package comment). Its errors are *net.OpError as the TCPConn's:
// deadlines give os.ErrDeadlineExceeded, a closed connection
// net.ErrClosed, the end of the stream io.EOF. Safe for concurrent use as
// any net.Conn: one Read and one Write may run at once.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu   sync.Mutex // one Read at a time uses the fields below
	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	readF func(fd uintptr) bool

	wmu    sync.Mutex // one Write at a time uses the fields below
	wbuf   []byte
	wn     int
	werr   syscall.Errno
	writeF func(fd uintptr) bool
}

// Wrap returns c as a *Conn when c is a *net.TCPConn, and c unchanged
// otherwise (or when its descriptor cannot be reached).
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	x := &Conn{TCPConn: tc, rc: rc}
	x.readF = x.doRead
	x.writeF = x.doWrite
	return x
}

// Listener returns ln with every accepted *net.TCPConn wrapped (Wrap).
func Listener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Read reads up to len(p) bytes, waiting in the netpoller until some are
// there (or the read deadline passes, or the connection is closed).
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.readF)
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case 0:
			c.rn = int(n)
			raceAcquireIO(fd)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until readable
		default:
			c.rerr = e
			return true
		}
	}
}

// Write writes all of p, waiting in the netpoller while the socket buffer
// is full (or until the write deadline passes, or the connection is
// closed); n is what was written before an error.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.rc.Write(c.writeF)
	n, errno := c.wn, c.werr
	c.wbuf = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

func (c *Conn) doWrite(fd uintptr) bool {
	raceReleaseIO(fd)
	for c.wn < len(c.wbuf) {
		rest := c.wbuf[c.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch e {
		case 0:
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until writable
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// opError wraps err as the TCPConn's own errors are (RawConn's come as an
// OpError of op "raw-read" or "raw-write": its cause is kept).
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
