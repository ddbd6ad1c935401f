//go:build linux

package e2e

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostproxy/hostproxy/internal/testenv"
)

// Ports published by TestDockerd. The engine's namespace is new, so nothing
// else is bound there.
const (
	dockerTCPPort   = 18080 // → 8080/tcp
	dockerUDPPort   = 18053 // → 53/udp
	dockerRangePort = 19000 // 19000-19099 → 9000-9099/tcp
	dockerRangeLen  = 100
	// dockerBridge is the address of docker0 (--bip): the source the
	// container sees for traffic relayed by the userland proxy.
	dockerBridge = "10.213.0.1"
)

// engineRow is one line of the side-by-side table.
type engineRow struct {
	proxy   string
	run     time.Duration // docker run -d
	procs   int           // proxy processes while the container runs
	rssKiB  uint64        // their total resident set size
	privKiB uint64        // of which pages private to each process
	remove  time.Duration // docker rm -f
	version string
}

// TestDockerd: a real dockerd spawns the userland proxy for every published
// port (dockerd 20.10: docker-proxy's older protocol, the proxy binds the
// port itself). Run once with docker-proxy and once with hostproxy, it
// checks that traffic to the loopback host address goes through the proxy,
// that docker rm -f ends every proxy process and frees the ports, and
// records the cost of both.
func TestDockerd(t *testing.T) {
	if os.Getenv("HOSTPROXY_E2E_SKIP_DOCKERD") == "1" {
		t.Skip("HOSTPROXY_E2E_SKIP_DOCKERD=1")
	}
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "dockerd")
	testenv.RequireCommand(t, "containerd")
	testenv.RequireCommand(t, "docker")
	testenv.RequireCommand(t, "nsenter")
	testenv.RequireCommand(t, "ip")
	dockerProxy := testenv.RequireCommand(t, "docker-proxy")

	image := filepath.Join(t.TempDir(), "rootfs.tar")
	writeRootfs(t, image, echoserverBin(t))
	proxies := []struct{ name, path string }{
		{"docker-proxy", dockerProxy},
		{"hostproxy", hostproxyBin(t)},
	}
	var rows []engineRow
	for _, p := range proxies {
		t.Run(p.name, func(t *testing.T) {
			rows = append(rows, runEngine(t, p.name, p.path, image))
		})
	}
	report(t, rows)
}

// writeRootfs writes a tarball holding only /echoserver.
func writeRootfs(t *testing.T, out, echoserver string) {
	t.Helper()
	bin, err := os.ReadFile(echoserver)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	hdr := &tar.Header{Name: "echoserver", Mode: 0o755, Size: int64(len(bin)), ModTime: time.Now(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(bin); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("write %s: %v", out, err)
	}
}

// engine is a dockerd started by the test.
type engine struct {
	dir    string
	sock   string
	ns     netns
	cmd    *exec.Cmd
	exited chan struct{}
	cgroup string // --cgroup-parent, unique to this engine
}

// docker runs the docker CLI against e.
func (e *engine) docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.tryDocker(args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, e.logTail())
	}
	return strings.TrimSpace(out)
}

func (e *engine) tryDocker(args ...string) (string, error) {
	return tryCommand(nil, "env", append([]string{"DOCKER_CONFIG=" + filepath.Join(e.dir, "cli"), "docker", "-H", "unix://" + e.sock}, args...)...)
}

func (e *engine) logTail() string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "dockerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "dockerd log (tail):\n" + string(b)
}

// startEngine starts dockerd in a network namespace of its own (so docker0
// and its iptables rules never touch the host), with every directory under
// a temporary one, and waits until it answers. extra are more dockerd flags.
func startEngine(t *testing.T, userlandProxy string, extra ...string) *engine {
	t.Helper()
	ns := newNetns(t, "dockerd")
	runDirs := preexisting("/run/docker/plugins", "/run/docker", "/run/containerd/s", "/run/containerd")
	shimSockets := dirNames(shimSocketDir)
	dir, err := os.MkdirTemp("", "hpe2e-dockerd-") // short: containerd's socket path must fit in sun_path
	if err != nil {
		t.Fatal(err)
	}
	e := &engine{
		dir:    dir,
		sock:   filepath.Join(dir, "docker.sock"),
		ns:     ns,
		exited: make(chan struct{}),
		cgroup: fmt.Sprintf("hpe2e-%d-%s", os.Getpid(), filepath.Base(dir)),
	}
	t.Cleanup(func() { e.cleanHost(t, runDirs, shimSockets) })
	log, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	// nsenter --net, not ip netns exec: the latter remounts /sys, hiding the
	// cgroup mounts dockerd needs ("Devices cgroup isn't mounted").
	e.cmd = exec.Command("nsenter", "--net="+e.ns.path(), "dockerd",
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"-H", "unix://"+e.sock,
		"--storage-driver=vfs",
		"--bip", dockerBridge+"/24",
		"--cgroup-parent", "/"+e.cgroup,
		"--userland-proxy-path", userlandProxy,
	)
	e.cmd.Args = append(e.cmd.Args, extra...)
	e.cmd.Stdout, e.cmd.Stderr = log, log
	if err := e.cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start dockerd: %v", err)
	}
	go func() {
		e.cmd.Wait()
		log.Close()
		close(e.exited)
	}()
	t.Cleanup(func() { e.stop(t) }) // before cleanHost: cleanups run last in, first out
	ok := poll(60*time.Second, func() bool {
		select {
		case <-e.exited:
			return true
		default:
		}
		_, err := e.tryDocker("version", "--format", "{{.Server.Version}}")
		return err == nil
	})
	select {
	case <-e.exited:
		t.Fatalf("dockerd exited: %v\n%s", e.cmd.ProcessState, e.logTail())
	default:
	}
	if !ok {
		t.Fatalf("dockerd did not answer on %s within 60s\n%s", e.sock, e.logTail())
	}
	return e
}

// stop ends dockerd by its pid (SIGTERM, then SIGKILL), then whatever it
// left: containers of its cgroup, containerd, shims and proxies in its
// namespace.
func (e *engine) stop(t *testing.T) {
	t.Helper()
	select {
	case <-e.exited:
	default:
		e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("dockerd (pid %d) ignored SIGTERM for 30s; killing it", e.cmd.Process.Pid)
			e.cmd.Process.Kill()
			<-e.exited
		}
	}
	killPIDs(t, e.cgroupPIDs())
	e.ns.killAll(t)
	if !poll(10*time.Second, func() bool { return len(e.cgroupPIDs()) == 0 }) {
		t.Errorf("container processes left in cgroup %s: %v", e.cgroup, e.cgroupPIDs())
	}
}

// cgroupDirs are the directories of the engine's --cgroup-parent: one per
// controller under cgroup v1, one under cgroup v2; those that exist.
func (e *engine) cgroupDirs() []string {
	dirs := []string{filepath.Join("/sys/fs/cgroup", e.cgroup)} // v2
	ctrls, _ := os.ReadDir("/sys/fs/cgroup")
	for _, c := range ctrls {
		if c.IsDir() {
			dirs = append(dirs, filepath.Join("/sys/fs/cgroup", c.Name(), e.cgroup)) // v1
		}
	}
	var out []string
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			out = append(out, d)
		}
	}
	return out
}

// cgroupPIDs lists the processes of the engine's containers.
func (e *engine) cgroupPIDs() []int {
	seen := make(map[int]bool)
	var pids []int
	for _, dir := range e.cgroupDirs() {
		filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// cleanHost removes what dockerd leaves outside its directory: its cgroups,
// mounts under its directory, the directory, and run directories it created.
func (e *engine) cleanHost(t *testing.T, runDirs, shimSockets map[string]bool) {
	t.Helper()
	removeStaleSockets(t, shimSocketDir, shimSockets)
	for _, d := range e.cgroupDirs() {
		removeTree(d)
	}
	for _, m := range mountsUnder(e.dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
	if err := os.RemoveAll(e.dir); err != nil {
		t.Errorf("remove %s: %v", e.dir, err)
	}
	for _, d := range []string{"/run/docker/plugins", "/run/docker", "/run/containerd/s", "/run/containerd"} {
		if !runDirs[d] {
			os.Remove(d) // only if empty: another engine may be using it
		}
	}
}

// shimSocketDir is where containerd-shim listens, whatever --exec-root says.
const shimSocketDir = "/run/containerd/s"

// dirNames returns the names in dir.
func dirNames(dir string) map[string]bool {
	m := make(map[string]bool)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		m[e.Name()] = true
	}
	return m
}

// removeStaleSockets removes the unix sockets of dir that were not there
// before and that nobody listens on any more: those of a shim that was
// killed instead of stopped.
func removeStaleSockets(t *testing.T, dir string, before map[string]bool) {
	t.Helper()
	for name := range dirNames(dir) {
		if before[name] {
			continue
		}
		path := filepath.Join(dir, name)
		// A killed shim may take a moment to close its socket.
		stale := poll(5*time.Second, func() bool {
			c, err := net.Dial("unix", path)
			if err == nil {
				c.Close()
			}
			return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist)
		})
		if stale {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("remove stale shim socket: %v", err)
			}
		}
	}
}

// removeTree removes a cgroup directory and its children, deepest first
// (cgroup directories go with rmdir, not unlink).
func removeTree(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() {
			removeTree(filepath.Join(dir, e.Name()))
		}
	}
	unix.Rmdir(dir)
}

func preexisting(paths ...string) map[string]bool {
	m := make(map[string]bool)
	for _, p := range paths {
		_, err := os.Stat(p)
		m[p] = err == nil
	}
	return m
}

// mountsUnder lists mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			ms = append(ms, fields[4])
		}
	}
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
	return ms
}

// runEngine runs the scenario against a dockerd using userlandProxy.
func runEngine(t *testing.T, name, userlandProxy, image string) engineRow {
	e := startEngine(t, userlandProxy)
	row := engineRow{proxy: name}
	if v, err := tryCommand(nil, userlandProxy, "-v"); err == nil {
		row.version = strings.TrimSpace(v)
	}
	e.docker(t, "import", image, "hpe2e-echo:latest")

	lo := netip.MustParseAddr("127.0.0.1")
	tcp := netip.AddrPortFrom(lo, dockerTCPPort)
	udp := netip.AddrPortFrom(lo, dockerUDPPort)
	first, last := uint16(dockerRangePort), uint16(dockerRangePort+dockerRangeLen-1)

	start := time.Now()
	id := e.docker(t, "run", "-d",
		"-p", fmt.Sprintf("%s:8080", tcp),
		"-p", fmt.Sprintf("%s:53/udp", udp),
		"-p", fmt.Sprintf("%s:%d-%d:9000-%d", lo, first, last, 9000+dockerRangeLen-1),
		"hpe2e-echo:latest", "/echoserver")
	row.run = time.Since(start)
	removed := false
	t.Cleanup(func() {
		if !removed {
			e.tryDocker("rm", "-f", id)
		}
	})

	procs := procsOf(e.ns, userlandProxy)
	row.procs = len(procs)
	for _, p := range procs {
		row.rssKiB += p.rssKiB
		row.privKiB += p.privateKiB
	}
	t.Logf("%s %s: docker run %v, %d proxy processes, total RSS %d KiB (private %d KiB)", name, row.version, row.run.Round(time.Millisecond), row.procs, row.rssKiB, row.privKiB)
	if want := 2 + dockerRangeLen; row.procs != want {
		t.Errorf("%d %s processes while the container runs, want %d (one per published port)", row.procs, name, want)
	}

	bridge := netip.MustParseAddr(dockerBridge)
	checkPeer := func(proto string, addr netip.AddrPort, peer netip.AddrPort, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s round trip through %s: %v", proto, addr, err)
		} else if peer.Addr() != bridge {
			t.Errorf("%s through %s: container saw %s, want the bridge %s (relayed by the userland proxy)", proto, addr, peer, bridge)
		}
	}
	for _, port := range []uint16{dockerTCPPort, first, first + 1, first + dockerRangeLen/2, last} {
		addr := netip.AddrPortFrom(lo, port)
		var peer netip.AddrPort
		c, err := e.ns.dialTCP(addr, 5*time.Second)
		if err == nil {
			peer, err = roundTripTCP(c, fmt.Sprintf("hello %d\n", port))
		}
		checkPeer("tcp", addr, peer, err)
	}
	for i := 0; i < 2; i++ { // twice: a new flow, then the same one
		var peer netip.AddrPort
		c, err := e.ns.dialUDP(udp)
		if err == nil {
			peer, err = roundTripUDP(c, fmt.Sprintf("datagram %d", i))
			c.Close()
		}
		checkPeer("udp", udp, peer, err)
	}

	start = time.Now()
	e.docker(t, "rm", "-f", id)
	row.remove = time.Since(start)
	removed = true
	waitFor(t, 20*time.Second, "every "+name+" process to exit after docker rm -f", func() bool {
		return len(procsOf(e.ns, userlandProxy)) == 0
	})
	var busy []error
	if err := e.ns.bindable("tcp", tcp); err != nil {
		busy = append(busy, err)
	}
	if err := e.ns.bindable("udp", udp); err != nil {
		busy = append(busy, err)
	}
	for port := first; port <= last; port++ {
		if err := e.ns.bindable("tcp", netip.AddrPortFrom(lo, port)); err != nil {
			busy = append(busy, err)
		}
	}
	if err := errors.Join(busy...); err != nil {
		t.Errorf("ports still in use after docker rm -f:\n%v", err)
	}
	return row
}

// report logs the side-by-side table and writes it to
// $HOSTPROXY_E2E_REPORT (default: hostproxy-e2e-dockerd.md in the temporary
// directory) for the README.
func report(t *testing.T, rows []engineRow) {
	var b strings.Builder
	fmt.Fprintf(&b, "| userland proxy | `docker run -d` (1 TCP + 1 UDP + %d-port TCP range) | proxy processes | total RSS (per process) | of which private | `docker rm -f` |\n", dockerRangeLen)
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		per := 0.0
		if r.procs > 0 {
			per = float64(r.rssKiB) / 1024 / float64(r.procs)
		}
		fmt.Fprintf(&b, "| %s | %.2f s | %d | %.1f MiB (%.1f MiB) | %.1f MiB | %.2f s |\n",
			r.proxy, r.run.Seconds(), r.procs, float64(r.rssKiB)/1024, per, float64(r.privKiB)/1024, r.remove.Seconds())
	}
	t.Logf("dockerd 20.10 side by side:\n%s", b.String())
	out := os.Getenv("HOSTPROXY_E2E_REPORT")
	if out == "" {
		out = filepath.Join(os.TempDir(), "hostproxy-e2e-dockerd.md")
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		t.Errorf("write report: %v", err)
		return
	}
	t.Logf("table written to %s", out)
}
