// Package deploy holds Kubernetes manifests for verdict serve on PostgreSQL (docs/ha.md);
// this test keeps them consistent with each other and their experiment valid.
package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/verdict-dev/verdict/experiments"
	"github.com/verdict-dev/verdict/store"
)

// manifest is the part of a Kubernetes object this test reads.
type manifest struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Resources  []string          `yaml:"resources"`
	Spec       struct {
		Replicas *int `yaml:"replicas"`
		Template struct {
			Spec struct {
				Containers []struct {
					Args []string `yaml:"args"`
					Env  []struct {
						Name      string `yaml:"name"`
						ValueFrom struct {
							SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
						} `yaml:"valueFrom"`
					} `yaml:"env"`
				} `yaml:"containers"`
				Volumes []struct {
					Name      string                `yaml:"name"`
					ConfigMap struct{ Name string } `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func load(t *testing.T, file string) []manifest {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []manifest
	for {
		var m manifest
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out = append(out, m)
	}
}

func TestManifests(t *testing.T) {
	kust := load(t, "kustomization.yaml")[0]
	byKind := map[string]manifest{}
	for _, f := range kust.Resources {
		for _, m := range load(t, f) {
			byKind[m.Kind] = m
		}
	}
	for _, k := range []string{"Deployment", "Service", "Secret", "ConfigMap", "PodDisruptionBudget"} {
		if _, ok := byKind[k]; !ok {
			t.Errorf("no %s in the kustomization", k)
		}
	}

	dep := byKind["Deployment"]
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("the Deployment must run 3 replicas")
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "serve" || !slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--dir=") }) {
		t.Errorf("the container must run verdict serve --dir: %v", c.Args)
	}
	secret := byKind["Secret"]
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
		if ref := e.ValueFrom.SecretKeyRef; ref.Name != "" {
			if ref.Name != secret.Metadata.Name {
				t.Errorf("env %s comes from Secret %s, the kustomization has %s", e.Name, ref.Name, secret.Metadata.Name)
			}
			if _, ok := secret.StringData[ref.Key]; !ok {
				t.Errorf("env %s: the Secret has no key %s", e.Name, ref.Key)
			}
		}
	}
	for _, want := range []string{"VERDICT_STORE", "VERDICT_TOKEN", "CLOUDFLARE_API_TOKEN"} {
		if !env[want] {
			t.Errorf("the container does not get %s", want)
		}
	}
	if dsn := secret.StringData["VERDICT_STORE"]; !strings.HasPrefix(dsn, "postgres://") {
		t.Errorf("VERDICT_STORE must be a PostgreSQL DSN, got %s", store.RedactDSN(dsn))
	}

	cm := byKind["ConfigMap"]
	mounted := false
	for _, v := range dep.Spec.Template.Spec.Volumes {
		mounted = mounted || v.ConfigMap.Name == cm.Metadata.Name
	}
	if !mounted {
		t.Errorf("the Deployment does not mount ConfigMap %s", cm.Metadata.Name)
	}
	if len(cm.Data) == 0 {
		t.Fatal("the ConfigMap holds no experiment")
	}
	for name, text := range cm.Data {
		if _, err := experiments.Load(name, []byte(text), experiments.LoadOptions{LookupEnv: func(string) (string, bool) { return "", false }}); err != nil {
			t.Errorf("experiment %s in the ConfigMap:\n%v", name, err)
		}
	}
}
