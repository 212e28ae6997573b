package main

import (
	"bytes"
	"os"
	"testing"
)

// TestDefaultPolicyIsTheExample: the policy the binary serves by default
// is the one README and examples/ document.
func TestDefaultPolicyIsTheExample(t *testing.T) {
	example, err := os.ReadFile("../../examples/policies/default.lua")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(defaultPolicy, example) {
		t.Error("cmd/rewrited/default.lua differs from examples/policies/default.lua: keep them identical")
	}
}
