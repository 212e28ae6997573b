// Package deploy's tests check that the deployment files (Kubernetes
// manifests, docker-compose.yml, Dockerfile) parse, keep the properties the
// fleet relies on, and pass arguments the real binary accepts.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

// imageUser is the numeric user the images run as (Dockerfile USER).
const imageUser = 65532

type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
}

type selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type deployment struct {
	Spec struct {
		Replicas int      `yaml:"replicas"`
		Selector selector `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               struct {
					RunAsNonRoot *bool `yaml:"runAsNonRoot"`
					RunAsUser    *int  `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Containers []container `yaml:"containers"`
				Volumes    []volume    `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		ResourceFieldRef *struct {
			Resource string `yaml:"resource"`
			Divisor  string `yaml:"divisor"`
		} `yaml:"resourceFieldRef"`
	} `yaml:"valueFrom"`
}

type servicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort string `yaml:"targetPort"`
}

type container struct {
	Image     string `yaml:"image"`
	Lifecycle struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Args  []string `yaml:"args"`
	Env   []envVar `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	GRPC *struct {
		Port    int     `yaml:"port"`
		Service *string `yaml:"service"`
	} `yaml:"grpc"`
	HTTPGet   any `yaml:"httpGet"`
	TCPSocket any `yaml:"tcpSocket"`
	Exec      any `yaml:"exec"`
}

type service struct {
	Spec struct {
		ClusterIP string            `yaml:"clusterIP"`
		Selector  map[string]string `yaml:"selector"`
		Ports     []servicePort     `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	Spec struct {
		MaxUnavailable *int     `yaml:"maxUnavailable"`
		MinAvailable   *int     `yaml:"minAvailable"`
		Selector       selector `yaml:"selector"`
	} `yaml:"spec"`
}

type configMap struct {
	Data map[string]string `yaml:"data"`
}

// manifests decodes every document of every deploy/kubernetes/*.yaml file
// but the kustomization, keyed by kind.
func manifests(t *testing.T) map[string]*yaml.Node {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in kubernetes/: %v", err)
	}
	byKind := map[string]*yaml.Node{}
	for _, file := range files {
		if filepath.Base(file) == "kustomization.yaml" {
			continue
		}
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(src))
		for {
			var doc yaml.Node
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			var obj object
			if err := doc.Decode(&obj); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if obj.APIVersion == "" || obj.Kind == "" || obj.Metadata.Name == "" {
				t.Fatalf("%s: a document lacks apiVersion, kind or metadata.name", file)
			}
			if _, dup := byKind[obj.Kind]; dup {
				t.Fatalf("%s: a second %s", file, obj.Kind)
			}
			byKind[obj.Kind] = &doc
		}
	}
	for _, gen := range loadKustomization(t).ConfigMapGenerator {
		var doc yaml.Node
		cm := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": gen.Name}, "data": generatedData(t, gen.Files)}
		if err := doc.Encode(cm); err != nil {
			t.Fatal(err)
		}
		byKind["ConfigMap"] = &doc
	}
	return byKind
}

type kustomization struct {
	Namespace          string          `yaml:"namespace"`
	Resources          []string        `yaml:"resources"`
	Images             []imageOverride `yaml:"images"`
	ConfigMapGenerator []struct {
		Name    string   `yaml:"name"`
		Files   []string `yaml:"files"`
		Options struct {
			DisableNameSuffixHash bool `yaml:"disableNameSuffixHash"`
		} `yaml:"options"`
	} `yaml:"configMapGenerator"`
}

type imageOverride struct {
	Name    string `yaml:"name"`
	NewName string `yaml:"newName"`
	NewTag  string `yaml:"newTag"`
}

func loadKustomization(t *testing.T) kustomization {
	t.Helper()
	src, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.Unmarshal(src, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	return k
}

// generatedData is what a configMapGenerator makes of files: each file's
// content under its base name.
func generatedData(t *testing.T, files []string) map[string]string {
	t.Helper()
	data := map[string]string{}
	for _, f := range files {
		src, err := os.ReadFile(filepath.Join("kubernetes", f))
		if err != nil {
			t.Fatal(err)
		}
		data[filepath.Base(f)] = string(src)
	}
	return data
}

func decode[T any](t *testing.T, docs map[string]*yaml.Node, kind string) T {
	t.Helper()
	var v T
	doc, ok := docs[kind]
	if !ok {
		t.Fatalf("no %s manifest", kind)
	}
	if err := doc.Decode(&v); err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	return v
}

func name(t *testing.T, docs map[string]*yaml.Node, kind string) string {
	t.Helper()
	return decode[object](t, docs, kind).Metadata.Name
}

// flagValue returns the value of --name in args, as --name=V or --name V.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// port returns the port of a listen address such as ":7070".
func port(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	p, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("listen address %q has no port", addr)
	}
	return p
}

// quantity parses the Kubernetes quantities the manifests use (250m, 1,
// 64Mi, 230MiB for GOMEMLIMIT) into milli-units or bytes.
func quantity(t *testing.T, s string) int64 {
	t.Helper()
	units := []struct {
		suffix string
		scale  int64
	}{{"MiB", 1 << 20}, {"GiB", 1 << 30}, {"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"m", 1}, {"", 1000}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			if v, err := strconv.ParseInt(n, 10, 64); err == nil {
				return v * u.scale
			}
		}
	}
	t.Fatalf("unsupported quantity %q", s)
	return 0
}

func TestKubernetesDeployment(t *testing.T) {
	docs := manifests(t)
	d := decode[deployment](t, docs, "Deployment")
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want 1 container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}

	if d.Spec.Replicas != 3 {
		t.Errorf("replicas = %d, want 3", d.Spec.Replicas)
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod labels %v", k, v, d.Spec.Template.Metadata.Labels)
		}
	}

	t.Run("args", func(t *testing.T) {
		if len(c.Args) == 0 || c.Args[0] != "serve" {
			t.Fatalf("args %q do not start with serve", c.Args)
		}
		listen, ok := flagValue(c.Args, "listen")
		if !ok || port(t, listen) != ports["grpc"] {
			t.Errorf("--listen %q does not match the grpc containerPort %d", listen, ports["grpc"])
		}
		metrics, ok := flagValue(c.Args, "metrics-listen")
		if !ok || port(t, metrics) != ports["metrics"] {
			t.Errorf("--metrics-listen %q does not match the metrics containerPort %d", metrics, ports["metrics"])
		}
		if _, ok := flagValue(c.Args, "policy"); ok {
			t.Errorf("args use --policy: a single file; want --policy-dir")
		}
		drain, ok := flagValue(c.Args, "drain-timeout")
		stop := c.Lifecycle.PreStop
		if stop == nil || stop.Sleep == nil || stop.Sleep.Seconds <= 0 {
			t.Fatal("no preStop sleep: a deleted pod would drain before leaving the endpoints")
		}
		wait := time.Duration(stop.Sleep.Seconds) * time.Second
		if dur, err := time.ParseDuration(drain); !ok || err != nil || wait+dur >= time.Duration(pod.TerminationGracePeriodSeconds)*time.Second {
			t.Errorf("preStop %v plus --drain-timeout %q must be shorter than terminationGracePeriodSeconds %d", wait, drain, pod.TerminationGracePeriodSeconds)
		}
	})

	t.Run("policy folder is the ConfigMap, mounted as a directory", func(t *testing.T) {
		dir, ok := flagValue(c.Args, "policy-dir")
		if !ok {
			t.Fatalf("args %q lack --policy-dir", c.Args)
		}
		cm := name(t, docs, "ConfigMap")
		found := false
		for _, m := range c.VolumeMounts {
			if m.MountPath != dir {
				continue
			}
			found = true
			if m.SubPath != "" {
				t.Errorf("mount %s uses subPath %q: subPath mounts never see ConfigMap updates", m.MountPath, m.SubPath)
			}
			if !m.ReadOnly {
				t.Errorf("mount %s is not readOnly", m.MountPath)
			}
			vol := slices.IndexFunc(pod.Volumes, func(v volume) bool { return v.Name == m.Name })
			if vol < 0 || pod.Volumes[vol].ConfigMap == nil || pod.Volumes[vol].ConfigMap.Name != cm {
				t.Errorf("volume %q is not ConfigMap %q", m.Name, cm)
			}
		}
		if !found {
			t.Errorf("nothing is mounted at --policy-dir %s", dir)
		}
	})

	t.Run("probes are native gRPC health checks", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			probe   *probe
			service string
		}{
			{"readiness", c.ReadinessProbe, "rewrite.v1.RewriteService"},
			{"liveness", c.LivenessProbe, ""},
		} {
			p := tc.probe
			switch {
			case p == nil || p.GRPC == nil:
				t.Errorf("%s probe is not grpc", tc.name)
			case p.HTTPGet != nil || p.TCPSocket != nil || p.Exec != nil:
				t.Errorf("%s probe has a second handler", tc.name)
			case p.GRPC.Port != ports["grpc"]:
				t.Errorf("%s probe port %d, want the grpc port %d", tc.name, p.GRPC.Port, ports["grpc"])
			case p.GRPC.Service == nil:
				t.Errorf("%s probe names no service, want %q", tc.name, tc.service)
			case *p.GRPC.Service != tc.service:
				t.Errorf("%s probe service = %q, want %q", tc.name, *p.GRPC.Service, tc.service)
			}
		}
	})

	t.Run("metrics annotations", func(t *testing.T) {
		a := d.Spec.Template.Metadata.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(ports["metrics"]) || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("annotations %v do not point at the metrics port %d", a, ports["metrics"])
		}
	})

	t.Run("security context", func(t *testing.T) {
		sc := pod.SecurityContext
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != imageUser {
			t.Errorf("pod securityContext must be runAsNonRoot with runAsUser %d", imageUser)
		}
		csc := c.SecurityContext
		if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
			csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
			csc.RunAsNonRoot == nil || !*csc.RunAsNonRoot ||
			!slices.Equal(csc.Capabilities.Drop, []string{"ALL"}) {
			t.Errorf("container securityContext %+v: want no privilege escalation, read-only root, non-root, drop ALL", csc)
		}
	})

	t.Run("resources", func(t *testing.T) {
		r := c.Resources
		for _, res := range []string{"cpu", "memory"} {
			req, lim := r.Requests[res], r.Limits[res]
			if req == "" || lim == "" {
				t.Errorf("%s needs a request and a limit (got %q, %q)", res, req, lim)
				continue
			}
			if quantity(t, req) > quantity(t, lim) {
				t.Errorf("%s request %s exceeds its limit %s", res, req, lim)
			}
		}
		// GOMEMLIMIT takes bytes: the downward API must give the limit
		// with divisor 1.
		i := slices.IndexFunc(c.Env, func(e envVar) bool { return e.Name == "GOMEMLIMIT" })
		if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.ResourceFieldRef == nil {
			t.Fatal("GOMEMLIMIT is not taken from the memory limit with resourceFieldRef")
		}
		ref := c.Env[i].ValueFrom.ResourceFieldRef
		if ref.Resource != "limits.memory" || (ref.Divisor != "" && ref.Divisor != "1") || r.Limits["memory"] == "" {
			t.Errorf("GOMEMLIMIT from %+v: want limits.memory in bytes (divisor 1) and a memory limit", ref)
		}
	})

	t.Run("service is headless over the pods", func(t *testing.T) {
		s := decode[service](t, docs, "Service")
		if s.Spec.ClusterIP != "None" {
			t.Errorf("clusterIP = %q, want None: clients' dns:/// round_robin must see every pod", s.Spec.ClusterIP)
		}
		if !mapsSubset(s.Spec.Selector, d.Spec.Template.Metadata.Labels) || len(s.Spec.Selector) == 0 {
			t.Errorf("selector %v does not select the pods %v", s.Spec.Selector, d.Spec.Template.Metadata.Labels)
		}
		i := slices.IndexFunc(s.Spec.Ports, func(p servicePort) bool { return p.Name == "grpc" })
		if i < 0 || s.Spec.Ports[i].Port != ports["grpc"] || s.Spec.Ports[i].TargetPort != "grpc" {
			t.Errorf("no grpc port %d targeting the pods' grpc port: %+v", ports["grpc"], s.Spec.Ports)
		}
	})

	t.Run("disruption budget keeps a majority", func(t *testing.T) {
		p := decode[pdb](t, docs, "PodDisruptionBudget")
		if !mapsSubset(p.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) || len(p.Spec.Selector.MatchLabels) == 0 {
			t.Errorf("selector %v does not select the pods", p.Spec.Selector.MatchLabels)
		}
		avail := -1
		switch {
		case p.Spec.MaxUnavailable != nil:
			avail = d.Spec.Replicas - *p.Spec.MaxUnavailable
		case p.Spec.MinAvailable != nil:
			avail = *p.Spec.MinAvailable
		}
		if avail < 2 || avail >= d.Spec.Replicas {
			t.Errorf("the budget keeps %d of %d pods: want at least 2 and room to drain one", avail, d.Spec.Replicas)
		}
	})
}

func mapsSubset(sub, super map[string]string) bool {
	for k, v := range sub {
		if super[k] != v {
			return false
		}
	}
	return true
}

// The ConfigMap ships the bundled example policy, byte for byte.
func TestConfigMapPolicyIsTheExample(t *testing.T) {
	cm := decode[configMap](t, manifests(t), "ConfigMap")
	want, err := os.ReadFile("../examples/policies/default.lua")
	if err != nil {
		t.Fatal(err)
	}
	if got := cm.Data["default.lua"]; got != string(want) {
		t.Errorf("ConfigMap default.lua differs from examples/policies/default.lua:\n%s", got)
	}
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	k := loadKustomization(t)
	files, _ := filepath.Glob("kubernetes/*.yaml")
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want %v", got, want)
	}
}

type composeFile struct {
	Services map[string]struct {
		Image    string   `yaml:"image"`
		Command  []string `yaml:"command"`
		Volumes  []string `yaml:"volumes"`
		Ports    []string `yaml:"ports"`
		Networks any      `yaml:"networks"` // a list of names or a map of name to settings
		ReadOnly bool     `yaml:"read_only"`
		CapDrop  []string `yaml:"cap_drop"`
	} `yaml:"services"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	src, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(src, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// networkAliases returns the service's networks and each one's aliases.
func networkAliases(t *testing.T, networks any) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	switch n := networks.(type) {
	case []any:
		for _, name := range n {
			out[fmt.Sprint(name)] = nil
		}
	case map[string]any:
		for name, settings := range n {
			out[name] = nil
			if m, ok := settings.(map[string]any); ok {
				if aliases, ok := m["aliases"].([]any); ok {
					for _, a := range aliases {
						out[name] = append(out[name], fmt.Sprint(a))
					}
				}
			}
		}
	default:
		t.Fatalf("networks %v: neither a list nor a map", networks)
	}
	return out
}

// publishRE matches a short-syntax port published on loopback only:
// 127.0.0.1:HOST:CONTAINER, where HOST may be a variable or empty.
var publishRE = regexp.MustCompile(`^127\.0\.0\.1:[^:]*:(\d+)$`)

func TestComposeFleet(t *testing.T) {
	c := loadCompose(t)
	var replicas []string
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, "rewrited:") {
			replicas = append(replicas, name)
		}
	}
	if len(replicas) < 2 {
		t.Fatalf("want at least two rewrited replicas, got %v", replicas)
	}
	var grpcPort int
	for _, name := range replicas {
		s := c.Services[name]
		dir, ok := flagValue(s.Command, "policy-dir")
		if !ok {
			t.Errorf("%s: command %q lacks --policy-dir", name, s.Command)
		}
		if !slices.ContainsFunc(s.Volumes, func(v string) bool { return strings.HasSuffix(v, ":"+dir+":ro") }) {
			t.Errorf("%s: no read-only volume at %s in %q", name, dir, s.Volumes)
		}
		listen, _ := flagValue(s.Command, "listen")
		grpcPort = port(t, listen)
		if aliases := networkAliases(t, s.Networks); !slices.Contains(aliases["fleet"], "rewrited") {
			t.Errorf("%s: no network alias rewrited on network fleet: %v", name, aliases)
		}
	}
	fe, ok := c.Services["frontend"]
	if !ok {
		t.Fatal("no frontend service")
	}
	if target, _ := flagValue(fe.Command, "rewrited"); target != fmt.Sprintf("dns:///rewrited:%d", grpcPort) {
		t.Errorf("frontend target %q, want dns:///rewrited:%d (every replica, round_robin)", target, grpcPort)
	}
	if _, ok := networkAliases(t, fe.Networks)["fleet"]; !ok {
		t.Errorf("frontend is not on network fleet")
	}
	listen, _ := flagValue(fe.Command, "listen")
	if !slices.ContainsFunc(fe.Ports, func(p string) bool {
		m := publishRE.FindStringSubmatch(p)
		return m != nil && m[1] == strconv.Itoa(port(t, listen))
	}) {
		t.Errorf("frontend ports %q do not publish its SMTP port %s on 127.0.0.1", fe.Ports, listen)
	}
	for name, s := range c.Services {
		for _, p := range s.Ports {
			if !publishRE.MatchString(p) {
				t.Errorf("%s publishes %q beyond 127.0.0.1", name, p)
			}
		}
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: want read_only and cap_drop [ALL]", name)
		}
	}
}

// The images run as the numeric user the Deployment expects.
func TestDockerfileUser(t *testing.T) {
	src, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	stages := regexp.MustCompile(`(?m)^FROM `).FindAllIndex(src, -1)
	users := regexp.MustCompile(`(?m)^USER (.+)$`).FindAllSubmatch(src, -1)
	if len(stages) == 0 || len(users) != len(stages) {
		t.Fatalf("%d stages but %d USER lines", len(stages), len(users))
	}
	for _, u := range users {
		if want := fmt.Sprintf("%d:%d", imageUser, imageUser); string(u[1]) != want {
			t.Errorf("USER %s, want %s", u[1], want)
		}
	}
}

// kubeletLayout writes files the way kubelet projects a ConfigMap volume:
// the files live in a timestamped directory, ..data points at it, and each
// NAME is a symlink through ..data.
func kubeletLayout(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	ts := "..2026_01_02_03_04_05.000000001"
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, ts, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// localArgs adapts deployed serve args to a test process: rewritedtest
// chooses the gRPC address and log format, the metrics listener moves to
// loopback, and the policy folder to dir.
func localArgs(args []string, dir string) []string {
	var out []string
	for _, a := range args[1:] { // args[0] is "serve"
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch name {
		case "listen", "log-format":
		case "metrics-listen":
			out = append(out, "--metrics-listen=127.0.0.1:0")
		case "policy-dir":
			out = append(out, "--policy-dir="+dir)
		default:
			out = append(out, a)
		}
	}
	return out
}

// metricsAddr returns the address p logged for its metrics listener.
func metricsAddr(t *testing.T, p *rewritedtest.Proc) string {
	t.Helper()
	for _, line := range strings.Split(p.Logs(), "\n") {
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving metrics" {
			return rec.Addr
		}
	}
	t.Fatal("rewrited logged no metrics address")
	return ""
}

// The real binary accepts the deployed arguments, serves the deployed policy
// folder and answers the probes' health checks.
func TestDeployedArgsServe(t *testing.T) {
	docs := manifests(t)
	k8s := decode[deployment](t, docs, "Deployment").Spec.Template.Spec.Containers[0].Args
	cm := decode[configMap](t, docs, "ConfigMap").Data
	compose := loadCompose(t).Services["rewrited1"].Command

	for _, tc := range []struct {
		name string
		args []string
		dir  string
	}{
		{"kubernetes", k8s, kubeletLayout(t, cm)},
		{"compose", compose, "../examples/policies"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := rewritedtest.Start(t, localArgs(tc.args, tc.dir)...)
			conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			for _, svc := range []string{"rewrite.v1.RewriteService", ""} {
				res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
				if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("health %q: %v %v, want SERVING", svc, res.GetStatus(), err)
				}
			}
			res, err := rewritev1.NewRewriteServiceClient(conn).RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{
				Status: 250, Response: "OK ids=1", Command: proto.String("DATA"),
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.GetResponse() != "super fantastic!\nOK ids=1" || res.GetPolicyVersion() == "" {
				t.Errorf("DATA reply: %q version %q, want the example policy's rewrite", res.GetResponse(), res.GetPolicyVersion())
			}

			// What the prometheus.io/port annotation scrapes.
			_, body := rewritedtest.HTTPGet(t, "http://"+metricsAddr(t, p)+"/metrics")
			info := fmt.Sprintf(`rewrited_policy_info{policy="default",shadow_version="",version=%q} 1`, res.GetPolicyVersion())
			if !strings.Contains(body, info+"\n") {
				t.Errorf("/metrics lacks %s", info)
			}
		})
	}
}
