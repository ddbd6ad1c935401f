//go:build linux

package privilege

import (
	"strings"
	"testing"
)

// FuzzFindAccount: any /etc/passwd content yields an account with the
// name asked for and ids from its line, or an error of one line; a numeric
// -user gives ids setresuid takes as such (never -1, "unchanged").
func FuzzFindAccount(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", "nobody")
	f.Add("nobody:x:-1:65534::/:\n", "nobody")
	f.Add("nobody:x:4294967296:1\n", "nobody")
	f.Add("nobody:x:1\n", "nobody")
	f.Add("", "nobody")
	f.Add("", "65534:65534")
	f.Fuzz(func(t *testing.T, passwd, name string) {
		if n, ok := numericAccount(name); ok {
			if n.uid < 0 || n.gid < 0 || n.uid >= 1<<32-1 || n.gid >= 1<<32-1 {
				t.Fatalf("%q: ids %d:%d", name, n.uid, n.gid)
			}
		}
		a, err := findAccount(strings.NewReader(passwd), name)
		if err != nil {
			if strings.ContainsRune(err.Error(), '\n') {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if a.name != name || a.uid < 0 || a.gid < 0 || a.uid > 1<<32-1 || a.gid > 1<<32-1 {
			t.Fatalf("%q in %q: %+v", name, passwd, a)
		}
	})
}

// FuzzIDMapped: an id is mapped exactly when some well-formed line of the
// map covers it.
func FuzzIDMapped(f *testing.F) {
	f.Add("         0          0 4294967295\n", uint32(65534))
	f.Add("         0       1000          1\n         1     100000      65536\n", uint32(65534))
	f.Add("0 0\n", uint32(0))
	f.Add("4294967295 0 4294967295\n", uint32(4294967295))
	f.Fuzz(func(t *testing.T, m string, id uint32) {
		got := idMapped([]byte(m), int(id))
		if got && !strings.ContainsAny(m, "0123456789") {
			t.Fatalf("%d mapped by %q", id, m)
		}
	})
}
