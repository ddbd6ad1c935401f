// Package privilege gives up what a running relay does not need: started as
// root it switches to an unprivileged user and clears every capability;
// in every case it sets no_new_privs and confines the process with a seccomp
// allow-list of the system calls the relays and the Go runtime make.
//
// Drop is called once, after every socket exists and before the process
// reports ready. It applies to every thread of the process.
package privilege

// Options says what Drop keeps and installs.
type Options struct {
	// User is the account to switch to when started as root: a name in
	// /etc/passwd, or "UID" or "UID:GID". Empty keeps the uid. A user that is missing, or whose
	// uid or gid has no mapping in the process's user namespace, keeps the
	// uid and gid; everything else is still dropped (Result.Kept says why).
	User string
	// KeepNetAdmin keeps CAP_NET_ADMIN in the permitted and effective sets
	// (transparent proxying binds backend sockets to client addresses).
	// Every other capability is cleared, the bounding set entirely.
	KeepNetAdmin bool
	// Seccomp installs the allow-list filter; a system call outside it
	// kills the process.
	Seccomp bool
}

// Result is what Drop did.
type Result struct {
	UID, GID int    // the ids the process runs with afterwards
	Switched bool   // the uid changed to Options.User's
	Kept     string // why the uid was kept while started as root, or ""
	Filter   int    // the number of system calls the filter allows; 0 without one
	// Bounding is the number of capabilities Drop took out of the
	// bounding set itself, each on every thread: none when the process
	// started with the set empty (the entry point of cmd/hostproxy's
	// shipped build clears it).
	Bounding int
}
