package upstream

import (
	"context"
	"io"
	"net/http"
)

// PostRequest builds the POST of one attempt to target with body and
// header, as http.NewRequestWithContext with a *bytes.Reader body followed
// by header.Set calls would, with fewer allocations per attempt:
//
//   - header is used as is, not copied: build it once per client (or per
//     credential) and never modify it afterwards. net/http's transport
//     only reads a request's header, as every http.RoundTripper must;
//   - body is read in place (it must not change while the request is in
//     flight), through one reader that is also its own Close, and GetBody
//     rewinds a new reader over the same bytes, so that the transport can
//     retry a request that found a stale keep-alive connection as before.
func PostRequest(ctx context.Context, target string, body []byte, header http.Header) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header = header
	if len(body) == 0 {
		req.Body = http.NoBody
		req.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
		return req, nil
	}
	req.ContentLength = int64(len(body))
	rb := &bodyReader{b: body}
	req.Body = rb
	req.GetBody = rb.rewind
	return req, nil
}

// bodyReader reads a byte slice once; Close is a no-op, as
// io.NopCloser(bytes.NewReader(b)) but in one allocation.
type bodyReader struct {
	b   []byte
	off int
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}

func (r *bodyReader) Close() error { return nil }

// rewind returns a new reader over the same bytes (http.Request.GetBody).
func (r *bodyReader) rewind() (io.ReadCloser, error) {
	return &bodyReader{b: r.b}, nil
}
