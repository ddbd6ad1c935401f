//go:build !linux

package main

import "github.com/hostproxy/hostproxy/logging"

// dropPrivileges does nothing outside Linux: there is neither seccomp nor
// the Linux capability model, and hostproxy's target is Linux.
func dropPrivileges(cfg *config, log *logging.Logger) error {
	if afterDrop != nil {
		afterDrop()
	}
	return nil
}
