package main

import (
	"fmt"

	"github.com/hostproxy/hostproxy/internal/privilege"
	"github.com/hostproxy/hostproxy/logging"
)

// dropPrivileges runs once every socket exists and before ready: started as
// root it switches to -user and clears every capability; in any case it
// sets no_new_privs and, with -seccomp, installs the system call allow-list
// on every thread. Its error is a start-up failure.
func dropPrivileges(cfg *config, log *logging.Logger) error {
	// -transparent, once it exists, sets KeepNetAdmin.
	res, err := privilege.Drop(privilege.Options{User: cfg.User, Seccomp: cfg.Seccomp})
	if err != nil {
		return err
	}
	if res.Kept != "" {
		log.Warn("started as root, keeping the uid; every capability is dropped",
			logging.String("reason", res.Kept), logging.Int("uid", res.UID))
	}
	log.Debug("privileges dropped", logging.Int("uid", res.UID), logging.Int("gid", res.GID),
		logging.String("switched", fmt.Sprint(res.Switched)), logging.Int("seccomp_allowed", res.Filter))
	if afterDrop != nil {
		afterDrop()
	}
	return nil
}
