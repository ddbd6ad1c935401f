//go:build linux && !amd64 && !arm64

package privilege

// auditArch 0: no filter for this architecture (Filter says so).
const auditArch = 0

var allowed, archAllowed []uint32
