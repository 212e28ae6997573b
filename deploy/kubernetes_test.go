package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// regexpHosts finds the cluster DNS names of rewrited in the docs.
var regexpHosts = regexp.MustCompile(`rewrited\.[a-z0-9-]+\.svc\.cluster\.local`)

type networkPolicy struct {
	Spec struct {
		PodSelector selector `yaml:"podSelector"`
		PolicyTypes []string `yaml:"policyTypes"`
		Ingress     []struct {
			Ports []struct {
				Port string `yaml:"port"`
			} `yaml:"ports"`
			From []struct {
				PodSelector       *selector `yaml:"podSelector"`
				NamespaceSelector *selector `yaml:"namespaceSelector"`
			} `yaml:"from"`
		} `yaml:"ingress"`
		Egress []any `yaml:"egress"`
	} `yaml:"spec"`
}

// The objects go to the namespace the docs' addresses name, and the image
// is a placeholder the kustomization overrides.
func TestKubernetesNamespaceAndImage(t *testing.T) {
	docs := manifests(t)
	k := loadKustomization(t)
	if ns := name(t, docs, "Namespace"); ns != "mail" || k.Namespace != ns {
		t.Errorf("Namespace %q, kustomization namespace %q: want both mail (rewrited.mail.svc.cluster.local)", ns, k.Namespace)
	}
	for _, doc := range []string{"../docs/deployment.md", "../docs/operations.md"} {
		src, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, host := range regexpHosts.FindAllString(string(src), -1) {
			if host != "rewrited.mail.svc.cluster.local" {
				t.Errorf("%s names %s, not the manifests' namespace", doc, host)
			}
		}
	}
	image := decode[deployment](t, docs, "Deployment").Spec.Template.Spec.Containers[0].Image
	repo, _, _ := strings.Cut(image, ":")
	if !strings.HasPrefix(repo, "registry.invalid/") {
		t.Errorf("image %q: want a placeholder under registry.invalid, which never resolves", image)
	}
	if i := slices.IndexFunc(k.Images, func(im imageOverride) bool { return im.Name == repo }); i < 0 || k.Images[i].NewName == "" || k.Images[i].NewTag == "" {
		t.Errorf("kustomization images: has no newName and newTag for %s", repo)
	}
}

// gRPC only from the frontends, metrics only from the monitoring namespace,
// no egress.
func TestNetworkPolicy(t *testing.T) {
	docs := manifests(t)
	np := decode[networkPolicy](t, docs, "NetworkPolicy")
	pod := decode[deployment](t, docs, "Deployment").Spec.Template
	if len(np.Spec.PodSelector.MatchLabels) == 0 || !mapsSubset(np.Spec.PodSelector.MatchLabels, pod.Metadata.Labels) {
		t.Fatalf("podSelector %v does not select the pods", np.Spec.PodSelector.MatchLabels)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []string{"Ingress", "Egress"}) || len(np.Spec.Egress) != 0 {
		t.Errorf("policyTypes %v, egress %v: want Ingress and Egress, no egress allowed", np.Spec.PolicyTypes, np.Spec.Egress)
	}
	ports := map[string]bool{}
	for _, p := range pod.Spec.Containers[0].Ports {
		ports[p.Name] = true
	}
	allowed := map[string]string{}
	for _, rule := range np.Spec.Ingress {
		if len(rule.Ports) != 1 || len(rule.From) != 1 {
			t.Fatalf("ingress rule %+v: want one port and one source", rule)
		}
		port, from := rule.Ports[0].Port, rule.From[0]
		if !ports[port] {
			t.Errorf("ingress port %q is no container port", port)
		}
		switch {
		case from.PodSelector != nil && from.NamespaceSelector == nil && len(from.PodSelector.MatchLabels) > 0:
			allowed[port] = "pods"
		case from.NamespaceSelector != nil && from.PodSelector == nil && from.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "monitoring":
			allowed[port] = "monitoring"
		default:
			t.Errorf("port %s: source %+v is neither labelled pods nor the monitoring namespace", port, from)
		}
	}
	if allowed["grpc"] != "pods" || allowed["metrics"] != "monitoring" || len(allowed) != 2 {
		t.Errorf("ingress %v: want grpc from labelled pods, metrics from monitoring", allowed)
	}
}

// TestKustomizeBuild renders the kustomization as `kubectl apply -k` would.
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed: the kustomization is checked from its files only")
	}
	out, err := exec.Command(kubectl, "kustomize", "kubernetes").Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v", err)
	}
	k := loadKustomization(t)
	dec := yaml.NewDecoder(bytes.NewReader(out))
	kinds := map[string]bool{}
	for {
		var obj struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name      string `yaml:"name"`
				Namespace string `yaml:"namespace"`
			} `yaml:"metadata"`
			Data map[string]string `yaml:"data"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []container `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		kinds[obj.Kind] = true
		if obj.Kind != "Namespace" && obj.Metadata.Namespace != "mail" {
			t.Errorf("%s %s is in namespace %q", obj.Kind, obj.Metadata.Name, obj.Metadata.Namespace)
		}
		switch obj.Kind {
		case "ConfigMap":
			gen := k.ConfigMapGenerator[0]
			if obj.Metadata.Name != "rewrited-policies" || !gen.Options.DisableNameSuffixHash {
				t.Errorf("ConfigMap %q: want rewrited-policies without a hash suffix, so pods reload it live", obj.Metadata.Name)
			}
			want := generatedData(t, gen.Files)
			if len(obj.Data) != len(want) {
				t.Errorf("ConfigMap keys %v, want %v", obj.Data, want)
			}
			for key, src := range want {
				if obj.Data[key] != src {
					t.Errorf("ConfigMap %s differs from its file", key)
				}
			}
		case "Deployment":
			im := k.Images[0]
			if got, want := obj.Spec.Template.Spec.Containers[0].Image, im.NewName+":"+im.NewTag; got != want {
				t.Errorf("rendered image %q, want %q", got, want)
			}
		}
	}
	for _, kind := range []string{"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} {
		if !kinds[kind] {
			t.Errorf("kubectl kustomize renders no %s", kind)
		}
	}
}
