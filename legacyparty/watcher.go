package legacyparty

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/switchyard/switchyard/broadcast"
	"github.com/switchyard/switchyard/upstream"
)

// Watcher opens browser-like subscriptions to the rooms of configured apps,
// for the shadow comparator. It is read-only after construction and safe
// for concurrent use; each Watch it returns is owned by the caller, who
// must Close it.
type Watcher struct {
	apps    map[string]SubscriberConfig
	metrics *upstream.Metrics
	log     *zap.Logger
}

var _ interface {
	WatchRoom(app, room string, onFrame func([]byte, time.Time)) (broadcast.Watch, error)
} = (*Watcher)(nil)

var _ broadcast.Watch = (*Subscription)(nil)

// NewWatcher validates each app's Config and returns a Watcher over them.
// The subscriptions use the Config's URL, Party and PathPrefix, the
// default backoff, and no secret header (the shared secret guards
// publishing only). apps is copied. m and logger may be nil.
func NewWatcher(apps map[string]Config, m *upstream.Metrics, logger *zap.Logger) (*Watcher, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	w := &Watcher{apps: make(map[string]SubscriberConfig, len(apps)), metrics: m, log: logger}
	for name, cfg := range apps {
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("legacyparty: watcher: app %q: %w", name, err)
		}
		cfg = cfg.WithDefaults()
		w.apps[name] = SubscriberConfig{URL: cfg.URL, Party: cfg.Party, PathPrefix: cfg.PathPrefix}
	}
	return w, nil
}

// WatchRoom subscribes to room of app's configured party and returns at
// once; the connection is made in the background (Watch.Ready). onFrame
// follows Subscribe's contract. An unknown app or invalid room is an error
// (*broadcast.Error, ENOTFOUND or EROOM).
func (w *Watcher) WatchRoom(app, room string, onFrame func([]byte, time.Time)) (broadcast.Watch, error) {
	cfg, ok := w.apps[app]
	if !ok {
		return nil, broadcast.Errorf(broadcast.ENOTFOUND, "legacyparty: app %q has no PartyKit configuration", app)
	}
	if err := broadcast.ValidateRoom(room); err != nil {
		return nil, err
	}
	cfg.Room = room
	return Subscribe(cfg, onFrame, w.metrics, w.log.With(zap.String("app", app))), nil
}
