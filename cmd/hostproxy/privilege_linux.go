package main

import (
	"fmt"

	"go.uber.org/zap/zapcore"

	"github.com/hostproxy/hostproxy/internal/privilege"
	"github.com/hostproxy/hostproxy/logging"
)

// dropPrivileges runs once every socket exists and before ready: started as
// root it switches to -user and clears every capability; in any case it
// sets no_new_privs and, with -seccomp, installs the system call allow-list
// on every thread. Its error is a start-up failure.
func dropPrivileges(cfg *config, log *logging.Logger) error {
	// -transparent keeps CAP_NET_ADMIN: every backend socket is made
	// transparent (IP_TRANSPARENT) when its connection or flow starts.
	res, err := privilege.Drop(privilege.Options{User: cfg.User, Seccomp: cfg.Seccomp, KeepNetAdmin: cfg.Transparent})
	if err != nil {
		return err
	}
	if res.Kept != "" {
		// A -user given explicitly that cannot be used is worth a warning;
		// the default missing (a minimal image without nobody) is not.
		msg, fields := "started as root, keeping the uid; every capability is dropped",
			[]zapcore.Field{logging.String("reason", res.Kept), logging.Int("uid", res.UID)}
		if cfg.User != defaultUser {
			log.Warn(msg, fields...)
		} else {
			log.Info(msg, fields...)
		}
	}
	if log.Enabled(zapcore.DebugLevel) {
		log.Debug("privileges dropped", logging.Int("uid", res.UID), logging.Int("gid", res.GID),
			logging.String("switched", fmt.Sprint(res.Switched)), logging.Int("seccomp_allowed", res.Filter),
			logging.Int("bounding_dropped", res.Bounding))
	}
	if afterDrop != nil {
		afterDrop()
	}
	return nil
}
