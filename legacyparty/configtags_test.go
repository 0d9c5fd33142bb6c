package legacyparty_test

import (
	"reflect"
	"testing"

	"github.com/switchyard/switchyard/legacyparty"
)

// The package's Config structs are plain data built by the config package
// (which decodes the YAML): they carry no decoding tags that nothing reads.
func TestConfigHasNoDecodingTags(t *testing.T) {
	for _, v := range []any{legacyparty.Config{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			f := typ.Field(i)
			for _, key := range []string{"yaml", "json"} {
				if tag, ok := f.Tag.Lookup(key); ok {
					t.Errorf("%s.%s has the tag %s:%q", typ.Name(), f.Name, key, tag)
				}
			}
		}
	}
}
