package rewrite

// Default request limits. A reply of 128 KiB is far beyond any real SMTP
// reply; an AUTH line may reach 12 KiB (RFC 4954), hence the command limit.
// conn_meta is bounded by the request size cap alone: counting its keys
// would cost every request a walk over metadata the policy may never read.
const (
	DefaultMaxResponseBytes = 128 << 10
	DefaultMaxCommandBytes  = 16 << 10
)

// Limits bound the fields of a request.
type Limits struct {
	MaxResponseBytes int
	MaxCommandBytes  int
}

func (l Limits) withDefaults() Limits {
	if l.MaxResponseBytes <= 0 {
		l.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if l.MaxCommandBytes <= 0 {
		l.MaxCommandBytes = DefaultMaxCommandBytes
	}
	return l
}
