package flags

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	flagdlogger "github.com/open-feature/flagd/core/pkg/logger"
	isync "github.com/open-feature/flagd/core/pkg/sync"
	blobsync "github.com/open-feature/flagd/core/pkg/sync/blob"
	"go.uber.org/zap"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/gcerrors"
)

// The blob provider shares one flag document among the replicas of an
// environment through an object store: flagd's own blob sync source
// (gocloud.dev: s3://, gs://, azblob://; file:// for a shared directory and
// for tests) polls the object and hands its content to flagd's in-process
// evaluator; blobSource sits in between and forwards only content that
// passes ValidateFile, as the file provider does. `switchyard flags set`
// and `killswitch` write the object (OpenBlob, PrepareBlobChange).

// blobSchemes are the object stores a blob source may name.
var blobSchemes = map[string]bool{"s3": true, "gs": true, "azblob": true, "file": true}

// ParseBlobSource splits a flag source URL into the bucket URL gocloud.dev
// opens and the object key: s3://BUCKET/KEY?region=R (query kept on the
// bucket), gs://BUCKET/KEY, azblob://CONTAINER/KEY, or file:///DIR/KEY (a
// directory every replica and the flags command see). The key must end in
// ".json".
func ParseBlobSource(source string) (bucketURL, key string, err error) {
	u, err := url.Parse(source)
	if err != nil {
		return "", "", fmt.Errorf("%q is not a URL: %w", source, err)
	}
	if !blobSchemes[u.Scheme] {
		return "", "", fmt.Errorf("%q: scheme must be s3, gs, azblob or file", source)
	}
	p := strings.TrimPrefix(u.Path, "/")
	if u.Scheme == "file" {
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return "", "", fmt.Errorf("%q: a file source is file:///absolute/dir/flags.json", source)
		}
		dir, base := path.Split(u.Path)
		bucketURL, key = "file://"+path.Clean(dir), base
	} else {
		if u.Host == "" {
			return "", "", fmt.Errorf("%q: no bucket", source)
		}
		bucketURL, key = u.Scheme+"://"+u.Host, p
		if u.RawQuery != "" {
			bucketURL += "?" + u.RawQuery
		}
	}
	if !strings.HasSuffix(key, ".json") || key == ".json" {
		return "", "", fmt.Errorf("%q: the object key must name a .json file", source)
	}
	return bucketURL, key, nil
}

// blobMux is the URL opener of every blob source: gocloud.dev's default
// mux (the s3, gs and azblob drivers registered by flagd's blob package),
// with file:// opened as a directory whose temporary files stay beside the
// object (so the final rename is atomic on any filesystem) and without
// gocloud's metadata side files.
var blobMux = func() *blob.URLMux {
	m := new(blob.URLMux)
	for _, s := range blob.DefaultURLMux().BucketSchemes() {
		if s == fileblob.Scheme {
			continue
		}
		m.RegisterBucket(s, blobOpener{s})
	}
	m.RegisterBucket(fileblob.Scheme, &fileblob.URLOpener{Options: fileblob.Options{NoTempDir: true, Metadata: fileblob.MetadataDontWrite}})
	return m
}()

// blobOpener delegates one scheme to gocloud.dev's default mux.
type blobOpener struct{ scheme string }

func (o blobOpener) OpenBucketURL(ctx context.Context, u *url.URL) (*blob.Bucket, error) {
	return blob.DefaultURLMux().OpenBucketURL(ctx, u)
}

// BlobStore reads and writes one flag document in an object store. It is
// safe for concurrent use; Close releases the bucket.
type BlobStore struct {
	// Source is the URL it was opened with.
	Source string
	bucket *blob.Bucket
	key    string
}

// OpenBlob opens the bucket of source (see ParseBlobSource). It does not
// read the object.
func OpenBlob(ctx context.Context, source string) (*BlobStore, error) {
	bu, key, err := ParseBlobSource(source)
	if err != nil {
		return nil, fmt.Errorf("flags: source: %w", err)
	}
	b, err := blobMux.OpenBucket(ctx, bu)
	if err != nil {
		return nil, fmt.Errorf("flags: open %s: %w", bu, err)
	}
	return &BlobStore{Source: source, bucket: b, key: key}, nil
}

// Read returns the document and its modification time; at most
// MaxFileSize bytes are accepted.
func (s *BlobStore) Read(ctx context.Context) ([]byte, time.Time, error) {
	return s.readKey(ctx, s.key)
}

func (s *BlobStore) readKey(ctx context.Context, key string) ([]byte, time.Time, error) {
	r, err := s.bucket.NewReader(ctx, key, nil)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("flags: read %s: %w", key, err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("flags: read %s: %w", key, err)
	}
	if len(data) > MaxFileSize {
		return nil, time.Time{}, fmt.Errorf("flags: %s: larger than %d bytes", key, MaxFileSize)
	}
	return data, r.ModTime(), nil
}

// Write replaces the document with data (one object write: readers see
// the old or the new content, never a mix). When the store's clock would
// give the new object the modification time of the previous one (stores
// with one-second resolution), it writes again once the second has passed:
// flagd's blob sync notices a change by its modification time.
func (s *BlobStore) Write(ctx context.Context, data []byte, prevMod time.Time) error {
	for range 3 {
		if err := s.bucket.WriteAll(ctx, s.key, data, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
			return fmt.Errorf("flags: write %s: %w", s.Source, err)
		}
		a, err := s.bucket.Attributes(ctx, s.key)
		if err != nil {
			return fmt.Errorf("flags: %s written but not readable: %w", s.Source, err)
		}
		if prevMod.IsZero() || !a.ModTime.Equal(prevMod) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("flags: write %s: %w", s.Source, ctx.Err())
		case <-time.After(time.Until(prevMod.Truncate(time.Second).Add(time.Second))):
		}
	}
	return fmt.Errorf("flags: write %s: the store kept the previous modification time; replicas may not see the change", s.Source)
}

// Close releases the bucket.
func (s *BlobStore) Close() error { return s.bucket.Close() }

// AuditKey is the object holding a blob document's audit trail (JSON
// lines): KEY.audit.jsonl beside it.
func (s *BlobStore) AuditKey() string { return s.key + ".audit.jsonl" }

// appendAudit appends line to the audit object (read, append, write: the
// object stores have no append; two concurrent changes can lose one line,
// so changes are made one at a time, as the runbook says).
func (s *BlobStore) appendAudit(ctx context.Context, line []byte) error {
	old, _, err := s.readKey(ctx, s.AuditKey())
	if err != nil && gcerrors.Code(errors.Unwrap(err)) != gcerrors.NotFound && gcerrors.Code(err) != gcerrors.NotFound {
		return err
	}
	out := append(append(old, line...), '\n')
	if err := s.bucket.WriteAll(ctx, s.AuditKey(), out, &blob.WriterOptions{ContentType: "application/jsonl"}); err != nil {
		return fmt.Errorf("flags: write audit %s: %w", s.AuditKey(), err)
	}
	return nil
}

// checkAudit fails when the audit object exists but cannot be read: a
// change that cannot be audited is not made.
func (s *BlobStore) checkAudit(ctx context.Context) error {
	_, err := s.bucket.Attributes(ctx, s.AuditKey())
	if err == nil || gcerrors.Code(err) == gcerrors.NotFound {
		return nil
	}
	return fmt.Errorf("flags: audit %s: %w", s.AuditKey(), err)
}

// ReadAuditBlob reads the audit trail of the document at source, oldest
// first (none yet: an empty list).
func ReadAuditBlob(ctx context.Context, source string) ([]AuditRecord, error) {
	s, err := OpenBlob(ctx, source)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	data, _, err := s.readKey(ctx, s.AuditKey())
	if err != nil {
		if gcerrors.Code(errors.Unwrap(err)) == gcerrors.NotFound || gcerrors.Code(err) == gcerrors.NotFound {
			return nil, nil
		}
		return nil, err
	}
	return parseAudit(s.AuditKey(), data)
}

// blobSource is a flagd sync source (isync.ISync): flagd's blob sync,
// polled every interval, whose every content is validated before flagd
// sees it. Invalid content keeps the last good flags and sets
// switchyard_flag_file_valid to 0.
type blobSource struct {
	source   string
	channels []string
	metrics  *Metrics
	logger   *zap.Logger
	inner    *blobsync.Sync
	v        *schemaValidator

	mu       sync.Mutex
	lastGood string
}

var _ isync.ISync = (*blobSource)(nil)

func newBlobSource(source string, channels []string, interval time.Duration, m *Metrics, logger *zap.Logger) (*blobSource, error) {
	bu, key, err := ParseBlobSource(source)
	if err != nil {
		return nil, err
	}
	secs := uint32(interval / time.Second)
	return &blobSource{source: source, channels: channels, metrics: m, logger: logger,
		inner: &blobsync.Sync{Bucket: bu, Object: key, BlobURLMux: blobMux, Poller: tickPoller{interval},
			Logger: flagdlogger.NewLogger(logger.Named("blobsync"), false), Interval: max(secs, 1)}}, nil
}

// tickPoller calls back every interval until ctx ends (flagd's own poller
// counts whole seconds; a kill switch should not wait for one).
type tickPoller struct{ interval time.Duration }

func (p tickPoller) Start(ctx context.Context, callback func()) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			callback()
		}
	}
}

func (tickPoller) Offset() uint32 { return 0 }

// Init reads and validates the document once: an unreachable or invalid
// document fails the provider's start with the reason.
func (s *blobSource) Init(ctx context.Context) error {
	if err := s.inner.Init(ctx); err != nil {
		return fmt.Errorf("flags: blob source: %w", err)
	}
	v, err := newSchemaValidator()
	if err != nil {
		return err
	}
	s.v = v
	st, err := OpenBlob(ctx, s.source)
	if err != nil {
		return err
	}
	defer st.Close()
	data, _, err := st.Read(ctx)
	if err != nil {
		s.setValid(false)
		return err
	}
	if _, err := v.parse(data, s.channels); err != nil {
		s.setValid(false)
		return fmt.Errorf("flags: %s: %w", s.source, err)
	}
	s.setValid(true)
	s.logger.Info("flag source loaded", zap.String("source", s.source))
	return nil
}

func (s *blobSource) setValid(ok bool) { s.metrics.setFileValid(ok) }

// Sync runs flagd's blob sync until ctx ends, forwarding valid content.
func (s *blobSource) Sync(ctx context.Context, out chan<- isync.DataSync) error {
	in := make(chan isync.DataSync, 1)
	done := make(chan error, 1)
	go func() { done <- s.inner.Sync(ctx, in) }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-done:
			if err != nil {
				return fmt.Errorf("flags: blob sync %s: %w", s.source, err)
			}
			return nil
		case d := <-in:
			if !s.accept(d.FlagData) {
				continue
			}
			select {
			case out <- d:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// accept validates content and reports whether it is new good content.
func (s *blobSource) accept(data string) bool {
	if _, err := s.v.parse([]byte(data), s.channels); err != nil {
		s.logger.Warn("flag source content refused; keeping the last good flags", zap.String("source", s.source), zap.Error(err))
		s.setValid(false)
		return false
	}
	s.setValid(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	if data == s.lastGood {
		return false
	}
	if s.lastGood != "" {
		s.logger.Info("flag source changed", zap.String("source", s.source))
	}
	s.lastGood = data
	return true
}

// ReSync sends the last good content again.
func (s *blobSource) ReSync(ctx context.Context, out chan<- isync.DataSync) error {
	s.mu.Lock()
	data := s.lastGood
	s.mu.Unlock()
	if data == "" {
		return nil
	}
	select {
	case out <- isync.DataSync{FlagData: data, Source: s.source}:
	case <-ctx.Done():
	}
	return nil
}

// IsReady reports whether flagd's blob sync made its first fetch.
func (s *blobSource) IsReady() bool { return s.inner.IsReady() }
