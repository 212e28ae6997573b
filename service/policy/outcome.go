package policy

// Outcome is how an evaluation ended: which reply the decision holds, and why.
type Outcome int32

// The outcomes of an evaluation. service/rewrite maps them to the API's
// rewrite.v1.Outcome, whose values they share.
const (
	OutcomeUnspecified   Outcome = iota
	OutcomeUnchanged             // the policy kept the reply
	OutcomeRewritten             // the policy's reply is sent
	OutcomePolicyError           // a Lua error: the original is kept
	OutcomeTimeout               // the evaluation ran out of its budget: the original is kept
	OutcomeInvalidResult         // the policy returned no valid SMTP reply: the original is kept
	OutcomeShadowed              // shadow mode kept the original the policy would have rewritten
	OutcomeProtected             // the DATA guard kept the original
)

var outcomeNames = [...]string{
	OutcomeUnspecified:   "unspecified",
	OutcomeUnchanged:     "unchanged",
	OutcomeRewritten:     "rewritten",
	OutcomePolicyError:   "policy_error",
	OutcomeTimeout:       "timeout",
	OutcomeInvalidResult: "invalid_result",
	OutcomeShadowed:      "shadowed",
	OutcomeProtected:     "protected",
}

// String is the outcome's name in metrics labels, logs and decision
// records: "unchanged", "policy_error", ...
func (o Outcome) String() string {
	if o < 0 || int(o) >= len(outcomeNames) {
		return "unspecified"
	}
	return outcomeNames[o]
}
