//go:build !linux

package privilege

import "errors"

// Drop is Linux only: elsewhere it fails, so that a caller asking for it
// learns that nothing was dropped.
func Drop(Options) (Result, error) {
	return Result{}, errors.New("dropping privileges is not supported on this platform")
}
