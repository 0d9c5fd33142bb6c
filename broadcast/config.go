package broadcast

import (
	"errors"
	"fmt"
	"time"
)

// WithDefaults returns c with every zero or negative size and duration set
// to its default, exactly as NewMulticaster applies them (see the field
// docs of Config). Callers that show the effective configuration use it
// instead of copying the values.
func (c Config) WithDefaults() Config { return c.withDefaults() }

// Validate reports every negative size or duration of c, each naming its
// field (offPathQueue: -1 is negative), without a package prefix.
// NewMulticaster does not call it (it treats negative values as zero); a
// configuration loader calls it so that a typo is refused rather than
// silently replaced by the default. Apps and SampleRate are not checked:
// a non-positive rate means unlimited, and SampleRate is code.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"offPathQueue", c.OffPathQueue}, {"offPathWorkers", c.OffPathWorkers},
		{"dedupMaxEntries", c.DedupMaxEntries}, {"batchParallelism", c.BatchParallelism},
		{"sequenceRooms", c.SequenceRooms},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %d is negative", f.name, f.v))
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{
		{"offPathTimeout", c.OffPathTimeout}, {"answerTimeout", c.AnswerTimeout}, {"dedupWindow", c.DedupWindow},
		{"sequenceIdleTTL", c.SequenceIdleTTL},
		{"sharedDedupTimeout", c.SharedDedupTimeout}, {"sharedDedupBackoff", c.SharedDedupBackoff},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %v is negative", f.name, f.v))
		}
	}
	if c.SharedDedupTimeout > time.Second {
		errs = append(errs, fmt.Errorf("sharedDedupTimeout: %v is over 1s: it delays every answer while the store is slow", c.SharedDedupTimeout))
	}
	return errors.Join(errs...)
}
