package main

import _ "embed"

// defaultPolicy is the policy serve runs when given none: the example of
// KumoMTA's documentation for the event. examples/policies/default.lua is
// its documented copy, kept identical by a test.
//
//go:embed default.lua
var defaultPolicy []byte

// defaultPolicyFile names defaultPolicy in logs and errors.
const defaultPolicyFile = "default.lua"
