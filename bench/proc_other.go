//go:build !linux

package main

import "errors"

const clockTicks = 100

var errPlatform = errors.New("process accounting is not supported on this platform")

func treeUsage(roots []int) (Mem, uint64, error) { return Mem{}, 0, errPlatform }

func treeRead(roots []int, fds bool) (usage, error) { return usage{}, errPlatform }
