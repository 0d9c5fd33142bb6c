// Package deploy holds the Kubernetes deployment pack (kustomize base and
// overlays) and the HAProxy template; this test renders every overlay with
// the kustomize Go API, offline, decodes each object strictly into the
// official k8s.io/api types, and checks what matters for Switchyard.
package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/switchyard/switchyard/config"
)

var overlays = []string{"dev", "staging", "prod"}

// rendered is one overlay's objects, decoded.
type rendered struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	accounts    map[string]*corev1.ServiceAccount
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	policies    []*networkingv1.NetworkPolicy
}

// strict decodes the YAML of one object into v, refusing unknown fields
// (a typo in a manifest is an error, as the API server's strict field
// validation would make it).
func strict(doc []byte, v any) error {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// render builds overlay with kustomize (no network: every base is local)
// and decodes every object into its k8s.io/api type.
func render(t *testing.T, overlay string) *rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join("overlays", overlay))
	if err != nil {
		t.Fatalf("kustomize build overlays/%s: %v", overlay, err)
	}
	out := &rendered{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}, accounts: map[string]*corev1.ServiceAccount{}}
	for _, r := range rm.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		gvk := r.GetGvk()
		id := fmt.Sprintf("%s %s/%s", overlay, gvk.Kind, r.GetName())
		var obj any
		switch gvk.ApiVersion() + "/" + gvk.Kind {
		case "apps/v1/Deployment":
			d := &appsv1.Deployment{}
			obj, out.deployments[r.GetName()] = d, d
		case "v1/Service":
			s := &corev1.Service{}
			obj, out.services[r.GetName()] = s, s
		case "v1/ConfigMap":
			c := &corev1.ConfigMap{}
			obj, out.configMaps[r.GetName()] = c, c
		case "v1/Secret":
			s := &corev1.Secret{}
			obj, out.secrets[r.GetName()] = s, s
		case "v1/ServiceAccount":
			s := &corev1.ServiceAccount{}
			obj, out.accounts[r.GetName()] = s, s
		case "policy/v1/PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			obj, out.pdbs = p, append(out.pdbs, p)
		case "autoscaling/v2/HorizontalPodAutoscaler":
			h := &autoscalingv2.HorizontalPodAutoscaler{}
			obj, out.hpas = h, append(out.hpas, h)
		case "networking.k8s.io/v1/NetworkPolicy":
			p := &networkingv1.NetworkPolicy{}
			obj, out.policies = p, append(out.policies, p)
		default:
			t.Errorf("%s: kind %s/%s is not one the pack should contain", id, gvk.ApiVersion(), gvk.Kind)
			continue
		}
		if err := strict(doc, obj); err != nil {
			t.Errorf("%s: does not decode strictly into k8s.io/api: %v", id, err)
		}
	}
	return out
}

var varRe = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

func TestOverlaysRenderAndValidate(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			r := render(t, overlay)
			gw := r.deployments["switchyard"]
			if gw == nil {
				t.Fatal("no Deployment switchyard")
			}
			if r.deployments["switchyard-redis"] == nil || r.services["switchyard-redis"] == nil {
				t.Error("Redis (Deployment and Service switchyard-redis) missing: the shared idempotency window needs it")
			}
			c := gw.Spec.Template.Spec.Containers[0]

			// The config the pod mounts: it must load with the variables
			// the Deployment provides, and every variable without a
			// default must come from a Secret key of that name.
			cm := configMapOf(t, r, gw)
			raw := cm.Data["config.yaml"]
			if raw == "" {
				t.Fatalf("ConfigMap %s has no config.yaml", cm.Name)
			}
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				env[e.Name] = e
			}
			for _, m := range varRe.FindAllStringSubmatch(raw, -1) {
				name, hasDefault := m[1], m[2] != ""
				e, ok := env[name]
				if !ok {
					if !hasDefault {
						t.Errorf("config.yaml uses ${%s} but the container has no such env var", name)
					}
					continue
				}
				ref := e.ValueFrom
				if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Key != name {
					t.Errorf("env %s: want valueFrom.secretKeyRef with key %s", name, name)
					continue
				}
				if generatedName(ref.SecretKeyRef.Name, r.secrets) != "switchyard-secrets" {
					t.Errorf("env %s: Secret %q, want switchyard-secrets", name, ref.SecretKeyRef.Name)
				}
				if s, ok := r.secrets[ref.SecretKeyRef.Name]; ok { // rendered (dev): the key must be there
					if _, ok := s.Data[name]; !ok && s.StringData[name] == "" && (ref.SecretKeyRef.Optional == nil || !*ref.SecretKeyRef.Optional) {
						t.Errorf("Secret %s has no key %s", s.Name, name)
					}
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !strings.Contains(raw, "${"+e.Name) {
					t.Errorf("env %s comes from a Secret but config.yaml does not use it", e.Name)
				}
			}
			cfg, err := config.Parse([]byte(raw), func(k string) string {
				if _, ok := env[k]; ok {
					return testSecret(k)
				}
				return ""
			})
			if err != nil {
				t.Fatalf("config.yaml of %s does not load: %v", overlay, err)
			}
			if cfg.Env != overlay {
				t.Errorf("config env %q, want %q", cfg.Env, overlay)
			}
			checkFlags(t, overlay, cfg, cm)
			if cfg.Idempotency.Store != config.IdempotencyRedis || !strings.HasPrefix(cfg.Idempotency.Redis.Addr, "switchyard-redis:") {
				t.Errorf("idempotency: %+v, want redis at switchyard-redis (the replicas share the window)", cfg.Idempotency)
			}

			// Probes on the admin port (the config's admin.listen), never
			// the public one.
			adminPort := portOf(t, cfg.Admin.Listen)
			publicPort := portOf(t, cfg.Listen)
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			if ports["admin"] != adminPort || ports["public"] != publicPort {
				t.Errorf("container ports %v, want admin %d and public %d as in config.yaml", ports, adminPort, publicPort)
			}
			for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil {
					t.Errorf("%s probe: want an httpGet probe", name)
					continue
				}
				if got := resolvePort(p.HTTPGet.Port, ports); got != adminPort {
					t.Errorf("%s probe on port %v (%d), want the admin port %d", name, p.HTTPGet.Port.String(), got, adminPort)
				}
			}
			if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("readiness probe path %s, want /readyz (503 while draining)", c.ReadinessProbe.HTTPGet.Path)
			}
			if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("liveness probe path %s, want /healthz", c.LivenessProbe.HTTPGet.Path)
			}

			// preStop, then SIGTERM and the drain within
			// server.shutdownTimeout: the grace period covers both.
			if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
				t.Fatal("preStop: want a sleep action (the image is distroless: no shell)")
			}
			pre := c.Lifecycle.PreStop.Sleep.Seconds
			grace := *gw.Spec.Template.Spec.TerminationGracePeriodSeconds
			drain := int64(cfg.Server.ShutdownTimeout.Seconds())
			if pre < 2 || pre+drain > grace {
				t.Errorf("preStop sleep %ds + shutdownTimeout %ds must fit terminationGracePeriodSeconds %ds (and the sleep be >= 2s)", pre, drain, grace)
			}
			res := c.Resources
			if res.Requests.Cpu().IsZero() || res.Requests.Memory().IsZero() || res.Limits.Memory().IsZero() {
				t.Errorf("resources %+v: want cpu and memory requests and a memory limit", res)
			}

			// Images: pinned, never latest.
			for _, d := range r.deployments {
				for _, ct := range d.Spec.Template.Spec.Containers {
					if !pinned(ct.Image) {
						t.Errorf("%s/%s: image %q is not pinned to a version (no tag, or latest)", d.Name, ct.Name, ct.Image)
					}
				}
			}

			// PDB, HPA and Services point at the gateway.
			sel := gw.Spec.Selector.MatchLabels
			if len(r.pdbs) != 1 || !sameLabels(r.pdbs[0].Spec.Selector.MatchLabels, sel) {
				t.Errorf("want one PodDisruptionBudget selecting %v", sel)
			} else if r.pdbs[0].Spec.MaxUnavailable == nil || r.pdbs[0].Spec.MaxUnavailable.IntValue() != 1 {
				t.Errorf("PDB maxUnavailable %v, want 1", r.pdbs[0].Spec.MaxUnavailable)
			}
			if len(r.hpas) != 1 || r.hpas[0].Spec.ScaleTargetRef.Name != gw.Name || r.hpas[0].Spec.ScaleTargetRef.Kind != "Deployment" {
				t.Errorf("want one HPA scaling Deployment %s", gw.Name)
			} else if h := r.hpas[0]; h.Spec.MinReplicas == nil || *h.Spec.MinReplicas > *gw.Spec.Replicas || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
				t.Errorf("HPA %d-%d inconsistent with replicas %d", *h.Spec.MinReplicas, h.Spec.MaxReplicas, *gw.Spec.Replicas)
			}
			for _, name := range []string{"switchyard", "switchyard-admin"} {
				s := r.services[name]
				if s == nil || !sameLabels(s.Spec.Selector, sel) {
					t.Errorf("Service %s missing or not selecting the gateway", name)
					continue
				}
				for _, p := range s.Spec.Ports {
					if _, ok := ports[p.TargetPort.String()]; !ok {
						t.Errorf("Service %s targets port %s, which the container does not name", name, p.TargetPort.String())
					}
				}
			}
			if s := r.services["switchyard"]; s != nil {
				for _, p := range s.Spec.Ports {
					if p.TargetPort.String() == "admin" {
						t.Error("the public Service exposes the admin port")
					}
				}
			}
			checkNetworkPolicy(t, r, sel)
			checkScrape(t, r)
			if r.accounts["switchyard"] == nil || gw.Spec.Template.Spec.ServiceAccountName != "switchyard" {
				t.Error("the gateway must run as ServiceAccount switchyard (the flag store's read access)")
			}
		})
	}
}

// generatedName strips the content hash kustomize appends to a generated
// Secret's name (when that Secret is rendered).
func generatedName(name string, secrets map[string]*corev1.Secret) string {
	if _, ok := secrets[name]; ok {
		if i := strings.LastIndex(name, "-"); i > 0 && len(name)-i == 11 {
			return name[:i]
		}
	}
	return name
}

// testSecret is a placeholder value of the right shape for a variable.
func testSecret(name string) string {
	if strings.Contains(name, "SIGNING_KEY") {
		return "signkey-test-00112233445566778899aabbccddeeff"
	}
	return "test-value-of-" + strings.ToLower(name) + "-0123456789abcdef"
}

func configMapOf(t *testing.T, r *rendered, d *appsv1.Deployment) *corev1.ConfigMap {
	t.Helper()
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && v.Name == "config" {
			cm := r.configMaps[v.ConfigMap.Name]
			if cm == nil {
				t.Fatalf("volume config names ConfigMap %s, which is not rendered", v.ConfigMap.Name)
			}
			return cm
		}
	}
	t.Fatal("no config volume")
	return nil
}

// checkFlags: dev reads its flag file from the ConfigMap (the shipped dev
// flags, unchanged); staging and prod share one document in the object
// store, polled often enough for the kill switch's 5 s bound.
func checkFlags(t *testing.T, overlay string, cfg *config.Config, cm *corev1.ConfigMap) {
	t.Helper()
	switch cfg.Flags.Provider {
	case "file":
		if overlay != "dev" {
			t.Errorf("%s uses provider file: several replicas need the shared source (provider blob)", overlay)
		}
		if cfg.Flags.File != "/etc/switchyard/config/flags.json" || cm.Data["flags.json"] == "" {
			t.Errorf("flags.file %s, want /etc/switchyard/config/flags.json from the ConfigMap", cfg.Flags.File)
		}
		shipped, err := os.ReadFile(filepath.Join("..", "configs", "flags", overlay+".flagd.json"))
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data["flags.json"] != string(shipped) {
			t.Errorf("overlays/%s/flags.json differs from configs/flags/%s.flagd.json: copy it again", overlay, overlay)
		}
	case "blob":
		if !strings.Contains(cfg.Flags.Source, "/"+overlay+"/") {
			t.Errorf("flags.source %s does not name the %s document", cfg.Flags.Source, overlay)
		}
		if cfg.Flags.PollInterval > 1e9 {
			t.Errorf("flags.pollInterval %v: the kill switch must reach every replica within 5s; keep it <= 1s", cfg.Flags.PollInterval)
		}
	default:
		t.Errorf("flags.provider %s: want file (dev) or blob", cfg.Flags.Provider)
	}
}

func checkNetworkPolicy(t *testing.T, r *rendered, sel map[string]string) {
	t.Helper()
	var gw *networkingv1.NetworkPolicy
	for _, p := range r.policies {
		if sameLabels(p.Spec.PodSelector.MatchLabels, sel) {
			gw = p
		}
	}
	if gw == nil {
		t.Fatal("no NetworkPolicy selects the gateway")
	}
	for _, rule := range gw.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port != nil && p.Port.String() == "admin" && len(rule.From) == 0 {
				t.Error("NetworkPolicy opens the admin port to everyone")
			}
		}
	}
	if !slices.Contains(gw.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Error("NetworkPolicy does not restrict egress")
	}
}

// checkScrape: the Prometheus job scrapes the admin Service's port with
// the admin token as a bearer credential file (never the token inline).
func checkScrape(t *testing.T, r *rendered) {
	t.Helper()
	cm := r.configMaps["switchyard-prometheus-scrape"]
	if cm == nil {
		t.Fatal("no ConfigMap switchyard-prometheus-scrape")
	}
	var doc struct {
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			Authorization struct {
				Type            string `json:"type"`
				CredentialsFile string `json:"credentials_file"`
				Credentials     string `json:"credentials"`
			} `json:"authorization"`
			RelabelConfigs []struct {
				Regex  string `json:"regex"`
				Action string `json:"action"`
			} `json:"relabel_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["switchyard.yml"]), &doc); err != nil || len(doc.ScrapeConfigs) != 1 {
		t.Fatalf("switchyard.yml: %v (%d jobs)", err, len(doc.ScrapeConfigs))
	}
	j := doc.ScrapeConfigs[0]
	if j.Authorization.Type != "Bearer" || j.Authorization.CredentialsFile == "" || j.Authorization.Credentials != "" {
		t.Errorf("scrape job authorization %+v: want Bearer from credentials_file", j.Authorization)
	}
	keeps := false
	for _, rc := range j.RelabelConfigs {
		keeps = keeps || (rc.Action == "keep" && rc.Regex == "switchyard-admin;admin")
	}
	if !keeps {
		t.Error("scrape job does not keep only the switchyard-admin Service's admin port")
	}
}

// pinned reports whether image names a version tag (not latest) or a
// digest.
func pinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	name := image[strings.LastIndex(image, "/")+1:]
	_, tag, ok := strings.Cut(name, ":")
	return ok && tag != "" && tag != "latest"
}

func portOf(t *testing.T, listen string) int32 {
	t.Helper()
	i := strings.LastIndex(listen, ":")
	var p int32
	if _, err := fmt.Sscan(listen[i+1:], &p); err != nil {
		t.Fatalf("listen %q: %v", listen, err)
	}
	return p
}

func resolvePort(p intstr.IntOrString, named map[string]int32) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	return named[p.StrVal]
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// The checks can fail: a manifest with a typo'd field, a latest tag, or a
// probe on the public port is refused.
func TestChecksRefuseBadManifests(t *testing.T) {
	var d appsv1.Deployment
	if err := strict([]byte("apiVersion: apps/v1\nkind: Deployment\nspec: {replica: 3}\n"), &d); err == nil {
		t.Error("a typo'd field (replica) decoded")
	}
	for img, want := range map[string]bool{"a/b:1.2": true, "a/b": false, "a/b:latest": false, "reg:5000/a/b": false, "a/b@sha256:00": true} {
		if pinned(img) != want {
			t.Errorf("pinned(%q) = %v, want %v", img, !want, want)
		}
	}
	if got := resolvePort(intstr.FromString("public"), map[string]int32{"public": 8080, "admin": 9091}); got == 9091 {
		t.Error("a probe on the public port resolved to the admin port")
	}
}
