package gateway

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/switchyard/switchyard/config"
	"github.com/switchyard/switchyard/legacyparty/partytest"
	"github.com/switchyard/switchyard/realtime/realtimetest"
)

var keyRe = regexp.MustCompile(`"key":"[^"]*"`)

// openAPI is docs/openapi.yaml, loaded for validation.
type openAPI struct {
	doc      map[string]any
	compiler *jsonschema.Compiler
}

func loadOpenAPI(t *testing.T) *openAPI {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var y any
	if err := yaml.Unmarshal(b, &y); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	j, err := json.Marshal(y)
	if err != nil {
		t.Fatalf("docs/openapi.yaml is not JSON-compatible: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource("openapi.json", doc); err != nil {
		t.Fatal(err)
	}
	m, _ := doc.(map[string]any)
	if m["openapi"] != "3.1.0" {
		t.Fatalf("docs/openapi.yaml: openapi = %v, want 3.1.0", m["openapi"])
	}
	return &openAPI{doc: m, compiler: c}
}

func ptrEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// responseSchema returns the JSON pointer of the schema documented for the
// answer of method on path with status and media type, or "" with the
// reason when the spec does not document it.
func (o *openAPI) responseSchema(path, method string, status int, media string) (string, string) {
	paths, _ := o.doc["paths"].(map[string]any)
	op, _ := paths[path].(map[string]any)
	if op == nil {
		return "", "path " + path + " is not in the spec"
	}
	m, _ := op[strings.ToLower(method)].(map[string]any)
	if m == nil {
		return "", method + " " + path + " is not in the spec"
	}
	rs, _ := m["responses"].(map[string]any)
	code := strconv.Itoa(status)
	r, _ := rs[code].(map[string]any)
	if r == nil {
		return "", fmt.Sprintf("%s %s answers %d, which the spec does not list", method, path, status)
	}
	ptr := "#/paths/" + ptrEscape(path) + "/" + strings.ToLower(method) + "/responses/" + code
	if ref, ok := r["$ref"].(string); ok {
		ptr = ref
		name := strings.TrimPrefix(ref, "#/components/responses/")
		r = o.doc["components"].(map[string]any)["responses"].(map[string]any)[name].(map[string]any)
	}
	content, _ := r["content"].(map[string]any)
	if content == nil {
		if media == "" {
			return "", ""
		}
		return "", fmt.Sprintf("%s %s %d has a %s body, the spec documents none", method, path, status, media)
	}
	if _, ok := content[media]; !ok {
		return "", fmt.Sprintf("%s %s %d answers %s, the spec documents %v", method, path, status, media, keys(content))
	}
	return ptr + "/content/" + ptrEscape(media) + "/schema", ""
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// check validates one real answer against the spec.
func (o *openAPI) check(t *testing.T, path, method string, resp *http.Response, body []byte) {
	t.Helper()
	media := ""
	if ct := resp.Header.Get("Content-Type"); ct != "" && len(body) > 0 {
		media, _, _ = mime.ParseMediaType(ct)
	}
	ptr, problem := o.responseSchema(path, method, resp.StatusCode, media)
	if problem != "" {
		t.Errorf("%s (body %.300s)", problem, body)
		return
	}
	if ptr == "" {
		return
	}
	sch, err := o.compiler.Compile("openapi.json" + ptr)
	if err != nil {
		t.Fatalf("compile %s: %v", ptr, err)
	}
	var inst any = string(body)
	if media == "application/json" {
		if inst, err = jsonschema.UnmarshalJSON(bytes.NewReader(body)); err != nil {
			t.Errorf("%s %s %d: answer is not JSON: %v", method, path, resp.StatusCode, err)
			return
		}
	}
	if err := sch.Validate(inst); err != nil {
		// Tokens are credentials, even a test server's: not in the log.
		shown := keyRe.ReplaceAll(body, []byte(`"key":"[redacted]"`))
		t.Errorf("%s %s %d does not match docs/openapi.yaml: %v\nanswer: %.600s", method, path, resp.StatusCode, err, shown)
	}
}

func signGrant(secret, app string, rooms []string, iat time.Time, life time.Duration) string {
	enc := base64.RawURLEncoding
	c, _ := json.Marshal(map[string]any{"app": app, "rooms": rooms, "iat": iat.Unix(), "exp": iat.Add(life).Unix()})
	s := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(c)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(s))
	return s + "." + enc.EncodeToString(mac.Sum(nil))
}

// TestOpenAPIDescribesRealAnswers drives a whole gateway (in-process
// PartyKit and Inngest test servers) through every operation of
// docs/openapi.yaml, successes and refusals, and validates each real
// answer against the schema the spec documents for its path, method,
// status and media type. Every operation of the spec must be exercised.
func TestOpenAPIDescribesRealAnswers(t *testing.T) {
	t.Parallel()
	spec := loadOpenAPI(t)
	party := partytest.MustStart(t)
	rt := realtimetest.NewServer(realtimetest.Config{})
	t.Cleanup(rt.Close)
	const (
		grantSecret = "openapi-grant-secret-0123456789abcdef"
		adminToken  = "openapi-admin-token-0123"
		origin      = "http://localhost:3000"
	)
	dir := t.TempDir()
	flagsJSON := strings.Replace(flagFile("shadow"), `"realtime-video-ready": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "shadow"}`,
		`"realtime-video-ready": {"state": "ENABLED", "variants": {"legacy": "legacy", "shadow": "shadow", "dual": "dual", "realtime": "realtime"}, "defaultVariant": "legacy"}`, 1)
	if err := os.WriteFile(filepath.Join(dir, "flags.json"), []byte(flagsJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := fmt.Sprintf(`env: test
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: %q}
flags: {provider: file, file: flags.json}
channels:
  - {name: video-ready, events: [video.asset.ready]}
  - {name: ai-stream, events: [ai.message]}
apps:
  ai-hero:
    apiKeys: [%q]
    party: {url: %q, party: main}
    realtime: {url: %q, channel: "{room}"}
    grantSecret: %q
    origins: [%q]
    sequence: true
server: {shutdownTimeout: 5s}
`, adminToken, testKey, party.URL(), rt.URL(), grantSecret, origin)
	path := filepath.Join(dir, "switchyard.yaml")
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	g, _ := start(t, cfg, nil)

	done := map[string]bool{}
	call := func(base, method, tmpl, target, auth, body string, hdr map[string]string, want int) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, base+target, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s %s = %d %s, want %d", method, target, resp.StatusCode, b, want)
		}
		spec.check(t, tmpl, method, resp, b)
		done[strings.ToLower(method)+" "+tmpl] = true
		return b
	}
	pub, adm := g.PublicURL(), g.AdminURL()
	room := "lesson-1"
	now := time.Now()
	good := signGrant(grantSecret, "ai-hero", []string{room}, now, 5*time.Minute)
	expired := signGrant(grantSecret, "ai-hero", []string{room}, now.Add(-20*time.Minute), 10*time.Minute)

	call(pub, "POST", "/v1/broadcast", "/v1/broadcast", testKey, `{"room":"lesson-1","name":"ai.message","body":"hi","requestId":"q1"}`, nil, 200)
	call(pub, "POST", "/v1/broadcast", "/v1/broadcast", testKey, `{"room":"lesson-1","name":"ai.message","body":"hi","requestId":"q1"}`, nil, 200) // duplicate
	call(pub, "POST", "/v1/broadcast", "/v1/broadcast", testKey, `{"room":"lesson-1","body":1}`, nil, 400)
	call(pub, "POST", "/v1/broadcast", "/v1/broadcast", "", `{}`, nil, 401)
	call(pub, "POST", "/v1/broadcast", "/v1/broadcast", testKey, `{"room":"a/b","name":"x","body":1}`, nil, 422)
	call(pub, "POST", "/v1/broadcasts", "/v1/broadcasts", testKey, `{"messages":[{"room":"lesson-1","name":"video.asset.ready","body":{"id":1}},{"room":"lesson-1","name":"ai.message","body":"x","requestId":"q1"}]}`, nil, 200)
	call(pub, "POST", "/v1/broadcasts", "/v1/broadcasts", testKey, `{"messages":[]}`, nil, 400)
	call(pub, "POST", "/apps/{app}/party/{room}", "/apps/ai-hero/party/lesson-1", "", `{"body":"tok","requestId":"a1","name":"ai.message"}`, nil, 200)
	call(pub, "POST", "/apps/{app}/party/{room}", "/apps/nope/party/lesson-1", "", `{}`, nil, 404)
	call(pub, "POST", "/apps/{app}/parties/{party}/{room}", "/apps/ai-hero/parties/main/lesson-1", "", `{"body":"tok","requestId":"a1","name":"ai.message"}`, nil, 200)
	call(pub, "POST", "/apps/{app}/parties/{party}/{room}", "/apps/ai-hero/parties/main/lesson-1", "", `{"body":1}`, nil, 400)

	tokBody := call(pub, "POST", "/v1/realtime/token", "/v1/realtime/token", testKey, `{"room":"lesson-1"}`, nil, 200)
	var tok struct {
		Sequence struct {
			Epoch string `json:"epoch"`
			Last  uint64 `json:"last"`
		} `json:"sequence"`
	}
	if err := json.Unmarshal(tokBody, &tok); err != nil || tok.Sequence.Last < 4 {
		t.Errorf("token answer's sequence %+v (%v), want the room's last number (at least 4)", tok.Sequence, err)
	}
	call(pub, "POST", "/v1/realtime/token", "/v1/realtime/token", testKey, `{"room":"lesson-1","topics":["video-ready"]}`, nil, 404) // realtime_disabled
	call(pub, "POST", "/v1/realtime/token", "/v1/realtime/token", testKey, `{"room":"lesson-1","topics":["nope"]}`, nil, 400)
	call(pub, "GET", "/v1/realtime/token", "/v1/realtime/token?app=ai-hero&room=lesson-1", good, "", map[string]string{"Origin": origin}, 200)
	call(pub, "GET", "/v1/realtime/token", "/v1/realtime/token?app=ai-hero&room=lesson-1", expired, "", nil, 401)
	call(pub, "GET", "/v1/realtime/token", "/v1/realtime/token?app=ai-hero&room=lesson-2", good, "", nil, 403)
	call(pub, "GET", "/v1/realtime/token", "/v1/realtime/token?app=nope&room=lesson-1", good, "", nil, 404)
	call(pub, "OPTIONS", "/v1/realtime/token", "/v1/realtime/token?app=ai-hero", "", "", map[string]string{"Origin": origin}, 204)
	call(pub, "OPTIONS", "/v1/realtime/token", "/v1/realtime/token?app=ai-hero", "", "", map[string]string{"Origin": "https://evil.example"}, 403)

	rc := fmt.Sprintf(`{"app":"ai-hero","room":"lesson-1","grant":%q,"receipts":[{"epoch":%q,"seq":1,"legacyMs":4.5,"realtimeMs":3.2},{"epoch":%q,"seq":2}]}`, good, tok.Sequence.Epoch, tok.Sequence.Epoch)
	call(pub, "POST", "/v1/receipts", "/v1/receipts", "", rc, map[string]string{"Content-Type": "text/plain;charset=UTF-8", "Origin": origin}, 202)
	call(pub, "POST", "/v1/receipts", "/v1/receipts", "", `{"app":"ai-hero","room":"lesson-1","grant":"x","receipts":[]}`, nil, 401)
	call(pub, "POST", "/v1/receipts", "/v1/receipts", "", strings.Replace(rc, `"seq":2}`, `"seq":2,"x":1}`, 1), nil, 400)
	call(pub, "OPTIONS", "/v1/receipts", "/v1/receipts?app=ai-hero", "", "", map[string]string{"Origin": origin}, 204)
	call(pub, "OPTIONS", "/v1/receipts", "/v1/receipts?app=ai-hero", "", "", nil, 403)

	call(adm, "GET", "/healthz", "/healthz", "", "", nil, 200)
	call(adm, "GET", "/readyz", "/readyz", "", "", nil, 200)
	call(adm, "GET", "/metrics", "/metrics", adminToken, "", nil, 200)
	call(adm, "GET", "/metrics", "/metrics", "", "", nil, 401)
	call(adm, "GET", "/v1/admin/routes", "/v1/admin/routes?app=ai-hero&room=lesson-1&event=ai.message", adminToken, "", nil, 200)
	call(adm, "GET", "/v1/admin/routes", "/v1/admin/routes?app=ai-hero&room=lesson-1", adminToken, "", nil, 400)
	call(adm, "GET", "/v1/admin/shadow/summary", "/v1/admin/shadow/summary", adminToken, "", nil, 200)
	call(adm, "GET", "/v1/admin/shadow/mismatches", "/v1/admin/shadow/mismatches?limit=5", adminToken, "", nil, 200)
	call(adm, "GET", "/v1/admin/shadow/mismatches", "/v1/admin/shadow/mismatches?limit=0", adminToken, "", nil, 400)
	sum := call(adm, "GET", "/v1/admin/receipts/summary", "/v1/admin/receipts/summary", adminToken, "", nil, 200)
	if !strings.Contains(string(sum), `"both":1`) || !strings.Contains(string(sum), `"neither":1`) {
		t.Errorf("receipts summary after one report: %s", sum)
	}
	call(adm, "GET", "/v1/admin/receipts/summary", "/v1/admin/receipts/summary", "", "", nil, 401)
	call(adm, "GET", "/", "/", adminToken, "", nil, 200)

	paths, _ := spec.doc["paths"].(map[string]any)
	for p, ops := range paths {
		for m := range ops.(map[string]any) {
			if !done[m+" "+p] {
				t.Errorf("docs/openapi.yaml: %s %s was not exercised", strings.ToUpper(m), p)
			}
		}
	}
}
