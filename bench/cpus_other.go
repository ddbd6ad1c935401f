//go:build !linux

package main

import (
	"errors"
	"os/exec"
)

func splitCPUs(string) (proxy, load []int, err error) {
	return nil, nil, errors.New("not supported on this platform")
}

func startProxy(cmd *exec.Cmd) error { return cmd.Start() }
