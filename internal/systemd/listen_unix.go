//go:build unix

package systemd

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The socket activation variables, and the first inherited descriptor.
const (
	ListenPIDEnv     = "LISTEN_PID"
	ListenFDsEnv     = "LISTEN_FDS"
	ListenFDNamesEnv = "LISTEN_FDNAMES"
	ListenFDsStart   = 3
)

// maxListenFDs bounds LISTEN_FDS: systemd passes at most a few hundred
// sockets, and a wild value must not make hostproxy walk millions of
// descriptors.
const maxListenFDs = 4096

// ListenFiles returns the sockets passed by socket activation: descriptors
// 3 to 3+$LISTEN_FDS-1 when $LISTEN_PID is this process's pid, each named
// after its $LISTEN_FDNAMES entry (or "LISTEN_FDS fd N"), marked
// close-on-exec. It unsets the three variables whatever they hold.
//
// It returns nothing when LISTEN_PID is unset or another process's (the
// variables were inherited, not meant for us), and an error when LISTEN_PID
// is ours but LISTEN_FDS is not a count or names a descriptor that is not
// open.
func ListenFiles() ([]*os.File, error) {
	pid, fds, names := os.Getenv(ListenPIDEnv), os.Getenv(ListenFDsEnv), os.Getenv(ListenFDNamesEnv)
	os.Unsetenv(ListenPIDEnv)
	os.Unsetenv(ListenFDsEnv)
	os.Unsetenv(ListenFDNamesEnv)
	if pid == "" || fds == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > maxListenFDs {
		return nil, fmt.Errorf("socket activation: %s=%q: want a count of descriptors from 0 to %d", ListenFDsEnv, fds, maxListenFDs)
	}
	var nameList []string
	if names != "" {
		nameList = strings.Split(names, ":")
	}
	files := make([]*os.File, 0, n)
	for i := range n {
		fd := ListenFDsStart + i
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("socket activation: %s=%d but fd %d: %w", ListenFDsEnv, n, fd, err)
		}
		name := "LISTEN_FDS fd " + strconv.Itoa(fd)
		if i < len(nameList) && nameList[i] != "" {
			name = nameList[i] + " (LISTEN_FDS fd " + strconv.Itoa(fd) + ")"
		}
		files = append(files, os.NewFile(uintptr(fd), name))
	}
	return files, nil
}
