// Package policies holds the example policies; default.lua is the one
// `rewrited serve` runs when no policy is given.
package policies

import _ "embed"

// Default is the source of default.lua, the bundled example policy.
//
//go:embed default.lua
var Default []byte

// DefaultFile is the name Default is loaded under.
const DefaultFile = "default.lua"
