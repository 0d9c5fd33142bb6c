//go:build unix

package adversarial

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/switchyard/switchyard/legacyparty/partykitdev"
	"github.com/switchyard/switchyard/realtime/inngestdev"
)

// start launches the dev server of u.kind on port (0: a free one).
func (u *ownUpstream) start(t *testing.T, port int) {
	t.Helper()
	ctx := context.Background()
	switch u.kind {
	case "partykit":
		root, err := partykitdev.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		var s *partykitdev.Server
		if port == 0 {
			s, err = partykitdev.Launch(ctx, root)
		} else {
			s, err = partykitdev.LaunchOn(ctx, root, port)
		}
		if err != nil {
			t.Fatal(err)
		}
		u.port, u.base, u.closeFn = s.Port(), s.URL(), s.Close
	case "inngest":
		root, err := inngestdev.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		var s *inngestdev.Server
		if port == 0 {
			s, err = inngestdev.Launch(ctx, root)
		} else {
			s, err = inngestdev.LaunchOn(ctx, root, port)
		}
		if errors.Is(err, inngestdev.ErrNoScript) {
			t.Skipf("no real Inngest dev server: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		u.port, u.base, u.closeFn = s.Port(), s.URL(), s.Close
	}
}

// writeFileAtomic replaces path with content by a rename, as a ConfigMap
// update or an editor does.
func writeFileAtomic(path, content string) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func removeAll(path string) error { return os.RemoveAll(path) }

func mkdir(path string) error { return os.Mkdir(path, 0o755) }
