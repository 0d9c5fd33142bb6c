package legacyparty_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/legacyparty"
)

// jsonGen writes random JSON documents that exercise the re-encoding rules:
// array-index and duplicate keys, numbers in every textual form, escapes,
// surrogates, raw UTF-8 and random insignificant whitespace.
type jsonGen struct {
	r *rand.Rand
	b strings.Builder
}

var (
	genKeys    = []string{"a", "b", "z", "0", "1", "2", "10", "01", "-1", "1.5", "4294967294", "4294967295", "__proto__", "é", `\u0030`, `\u00e9`, ""}
	genNumbers = []string{"0", "-0", "1", "1.0", "1.50", "-2.5e3", "1E2", "1e+2", "12345678901234567890", "9007199254740993",
		"0.1", "0.000001", "0.0000001", "1e21", "1e20", "123456789012345678901234", "1e-7", "5e-324", "1e-400", "1e400",
		"-1e400", "3.14159265358979323846", "100e-2", "0e5", "-0.0", "2.2250738585072014e-308", "1.7976931348623157e308"}
	genStrings = []string{"plain", `\u00e9`, `\ud83d\ude00`, `\ud800`, `\udc00\ud800`, `\/`, `\"\\`, `\b\f\n\r\t`, `\u0000\u001f`,
		"é😀", `<&>`, `\u2028\u2029`, "\u2028", `\uFFFF`, `\uD834\uDD1E`, " ", ""}
	genSpace = []string{"", "", "", " ", "\n", "\t", "\r\n  "}
)

func (g *jsonGen) ws() { g.b.WriteString(genSpace[g.r.IntN(len(genSpace))]) }

func (g *jsonGen) value(depth int) {
	g.ws()
	n := 7
	if depth > 3 {
		n = 5
	}
	switch g.r.IntN(n) {
	case 0:
		g.b.WriteString([]string{"true", "false", "null"}[g.r.IntN(3)])
	case 1, 2:
		g.b.WriteString(genNumbers[g.r.IntN(len(genNumbers))])
	case 3, 4:
		g.b.WriteString(`"` + genStrings[g.r.IntN(len(genStrings))] + `"`)
	case 5:
		g.b.WriteByte('[')
		for i, k := 0, g.r.IntN(4); i < k; i++ {
			if i > 0 {
				g.b.WriteByte(',')
			}
			g.value(depth + 1)
		}
		g.ws()
		g.b.WriteByte(']')
	case 6:
		g.object(depth)
	}
	g.ws()
}

func (g *jsonGen) object(depth int) {
	g.b.WriteByte('{')
	for i, k := 0, g.r.IntN(6); i < k; i++ {
		if i > 0 {
			g.b.WriteByte(',')
		}
		g.ws()
		g.b.WriteString(`"` + genKeys[g.r.IntN(len(genKeys))] + `"`)
		g.ws()
		g.b.WriteByte(':')
		g.value(depth + 1)
	}
	g.ws()
	g.b.WriteByte('}')
}

// TestDifferentialReencoding publishes the same random documents to
// partytest and to the real PartyKit dev server and requires the frames
// to be byte-identical: partytest's Reencode is JSON.stringify(JSON.parse()).
func TestDifferentialReencoding(t *testing.T) {
	const docs = 150
	targets := conformanceTargets(t)
	room := uniqueRoom("diff")
	watchers := make([]*watcher, len(targets))
	for i, tg := range targets {
		watchers[i] = mustWatch(t, legacyparty.SubscriberConfig{URL: tg.url, Room: room})
	}
	g := &jsonGen{r: rand.New(rand.NewPCG(20261123, 1))}
	for i := 0; i < docs; i++ {
		g.b.Reset()
		g.ws()
		g.object(0) // frames must be objects to reach onFrame
		g.ws()
		doc := g.b.String()
		var frames []string
		for j, tg := range targets {
			if status, body := do(t, http.MethodPost, roomURL(t, tg.url, "", "", room), doc); status != http.StatusOK {
				t.Fatalf("doc %d %q: %s answered %d: %s", i, doc, tg.name, status, body)
			}
			frames = append(frames, string(watchers[j].next(t)))
		}
		if frames[0] != frames[1] {
			t.Errorf("doc %d %q:\n%s: %s\n%s: %s", i, doc, targets[0].name, frames[0], targets[1].name, frames[1])
		}
	}
	t.Logf("%d random documents re-encoded identically by %s", docs, fmt.Sprint(targets))
}
