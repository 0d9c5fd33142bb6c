package broadcast

import (
	"strings"
	"testing"
	"time"
)

func TestConfigWithDefaultsAndValidate(t *testing.T) {
	d := Config{}.WithDefaults()
	if d.OffPathQueue != 4096 || d.OffPathWorkers != 64 || d.OffPathTimeout != 5*time.Second ||
		d.DedupWindow != 10*time.Minute || d.DedupMaxEntries != 100000 {
		t.Errorf("WithDefaults() = %+v, want the documented defaults", d)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	err := Config{OffPathQueue: -1, OffPathTimeout: -time.Second, DedupWindow: -1}.Validate()
	for _, want := range []string{"offPathQueue: -1 is negative", "offPathTimeout: -1s is negative", "dedupWindow: -1ns is negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, want)
		}
	}
}
