package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStateReadFile checks the reader data helpers (kumo.json_load) use: a
// file under the policy's folder or a --lua-path folder is read, any other
// is refused.
func TestStateReadFile(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"policy/init.lua":    "kumo.on('smtp_server_rewrite_response', function() end)",
		"policy/data.json":   `{"in": "policy"}`,
		"share/extras.toml":  `in = "share"`,
		"outside/secret.txt": "secret",
	} {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "outside", "secret.txt"), filepath.Join(dir, "policy", "link.txt")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "policy", "init.lua")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := Compile(file, src, Options{LuaPath: filepath.Join(dir, "share", "?.lua")})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, err := p.get()
	if err != nil {
		t.Fatal(err)
	}
	defer p.put(s)
	for _, tc := range []struct {
		name, want, err string
	}{
		{"policy/data.json", `{"in": "policy"}`, ""},
		{"share/extras.toml", `in = "share"`, ""},
		{"policy/../outside/secret.txt", "", "is outside the folders a policy may read"},
		{"policy/link.txt", "", "is outside the folders a policy may read"},
		{"policy/missing.json", "", "no such file or directory"},
	} {
		got, err := s.ReadFile(filepath.Join(dir, tc.name))
		switch {
		case tc.err == "" && (err != nil || string(got) != tc.want):
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: got %q, %v; want an error containing %q", tc.name, got, err, tc.err)
		}
	}
}
