package policy

import "regexp"

// DefaultName is the policy a request without a policy name selects, and
// the name of a policy served alone.
const DefaultName = "default"

// MaxNameBytes bounds a policy name.
const MaxNameBytes = 128

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// ValidName reports whether name can name a policy: a request can ask for
// it, and a NAME.lua file can serve it.
func ValidName(name string) bool {
	return len(name) <= MaxNameBytes && nameRE.MatchString(name)
}
