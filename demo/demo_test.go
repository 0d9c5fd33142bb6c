package demo

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOpenLogIsFreshPerRun: two demos without --log write two files, so
// one never truncates the other's logs (it used a fixed path before).
func TestOpenLogIsFreshPerRun(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	a, err := openLog("")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.WriteString("first demo\n"); err != nil {
		t.Fatal(err)
	}
	b, err := openLog("")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Name() == b.Name() {
		t.Fatalf("both demos log to %s", a.Name())
	}
	if got, _ := os.ReadFile(a.Name()); string(got) != "first demo\n" {
		t.Errorf("the first demo's log was changed: %q", got)
	}
	named := filepath.Join(t.TempDir(), "demo.log")
	c, err := openLog(named)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if st, err := os.Stat(named); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("a named log: %v, mode %v; want it created 0600", err, st.Mode().Perm())
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{Duration: 1, Rate: 1, Every: 1}).Validate(); err != nil {
		t.Error(err)
	}
	for _, o := range []Options{{Rate: 1, Every: 1}, {Duration: 1, Every: 1}, {Duration: 1, Rate: 1}, {Duration: 1, Rate: -1, Every: 1}} {
		if o.Validate() == nil {
			t.Errorf("%+v: nil error", o)
		}
	}
}
