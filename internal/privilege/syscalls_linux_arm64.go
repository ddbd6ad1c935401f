package privilege

import "golang.org/x/sys/unix"

// auditArch is the architecture the filter accepts.
const auditArch = unix.AUDIT_ARCH_AARCH64

// archAllowed: arm64 has only the generic calls.
var archAllowed = []uint32{unix.SYS_ACCEPT}
