package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/hostproxy/hostproxy/sockopt"
)

// mapping is one forwarded port: the proxy listens on Host and forwards to
// Backend.
type mapping struct {
	Proto   string // "tcp" or "udp"
	Host    netip.AddrPort
	Backend netip.AddrPort
}

// peerSpec describes how to run one proxy under test. Commands are templates:
// every "{name}" in an argument is replaced from the mapping (see
// expandArgs for the names).
type peerSpec struct {
	Name string
	Bin  string // the executable: a name looked up on PATH or a path
	// Missing, when set, is why the peer cannot run here.
	Missing string
	Protos  []string // protocols it is measured with
	// NoProto explains, per protocol not in Protos, why it is skipped.
	NoProto map[string]string

	// Args is the command for one process serving one mapping.
	Args []string
	// Each, when set, makes one process serve many mappings: the command is
	// Head followed by Each expanded once per mapping.
	Head, Each []string
	// Config, when set, is written to {config} in a fresh temp dir
	// ({prefix}) before the process starts; one process serves every
	// mapping, and Args is expanded with the first mapping.
	Config *template.Template

	// Status: fd 3 is a pipe on which the process reports "0\n" when ready
	// or "1\n<reason>" on failure (docker-proxy's protocol).
	Status bool
	// EachStatus: the many-mapping command (Each) reports on fd 3 too.
	EachStatus bool
	// ListenFD: fd 4 is the host socket, bound (and listening for TCP) by
	// the harness.
	ListenFD bool
}

// supports reports whether p is measured with proto.
func (p *peerSpec) supports(proto string) bool { return slices.Contains(p.Protos, proto) }

var placeholder = regexp.MustCompile(`\{[a-z_]*\}`)

// expandArgs replaces each {name} in tmpl with vars[name]. An unknown name is
// an error, so that a typo in a template fails before anything runs.
func expandArgs(tmpl []string, vars map[string]string) ([]string, error) {
	out := make([]string, 0, len(tmpl))
	var bad error
	for _, a := range tmpl {
		out = append(out, placeholder.ReplaceAllStringFunc(a, func(m string) string {
			v, ok := vars[m[1:len(m)-1]]
			if !ok && bad == nil {
				bad = fmt.Errorf("command template %q: unknown placeholder %s", a, m)
			}
			return v
		}))
	}
	if bad != nil {
		return nil, bad
	}
	return out, nil
}

// mappingVars are the placeholders of a mapping.
func mappingVars(m mapping, dir string) map[string]string {
	return map[string]string{
		"proto":        m.Proto,
		"host_ip":      m.Host.Addr().String(),
		"host_port":    fmt.Sprint(m.Host.Port()),
		"host":         m.Host.String(),
		"backend_ip":   m.Backend.Addr().String(),
		"backend_port": fmt.Sprint(m.Backend.Port()),
		"backend":      m.Backend.String(),
		"prefix":       dir,
		"config":       filepath.Join(dir, "proxy.conf"),
	}
}

const haproxyConfig = `# written by hostproxy's bench harness
global
	maxconn 9000
defaults
	mode tcp
	timeout connect 5s
	timeout client 90s
	timeout server 90s
{{range $i, $m := .Maps}}
listen m{{$i}}
	bind {{$m.Host}}
	server backend {{$m.Backend}}
{{end}}`

const nginxConfig = `# written by hostproxy's bench harness
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes auto;
worker_rlimit_nofile 65536;
pid {{.Prefix}}/nginx.pid;
error_log {{.Prefix}}/error.log warn;
events { worker_connections 16384; }
stream {
{{range .Maps}}	server { listen {{.Host}}{{if eq .Proto "udp"}} udp{{end}}; proxy_pass {{.Backend}}; proxy_timeout 90s; }
{{end}}}
`

// configData is what a peer's Config template sees.
type configData struct {
	Prefix string    // the instance's temp dir
	Maps   []mapping // every mapping the process serves
}

// defaultPeers returns the peers the harness knows, in table order.
// hostproxyBin is the hostproxy executable (empty: not available).
func defaultPeers(hostproxyBin string) []*peerSpec {
	compat := []string{"-proto", "{proto}", "-host-ip", "{host_ip}", "-host-port", "{host_port}",
		"-container-ip", "{backend_ip}", "-container-port", "{backend_port}"}
	return []*peerSpec{
		{Name: "direct", Protos: []string{"tcp", "udp"}},
		{
			Name: "hostproxy", Bin: hostproxyBin, Protos: []string{"tcp", "udp"},
			Args: append(slices.Clone(compat), "-use-listen-fd"),
			Each: []string{"-L", "{host_ip}:{host_port}:{backend_ip}:{backend_port}/{proto}"},
			// The forwarder (-L) reports on fd 3 when it is a pipe.
			Status: true, EachStatus: true, ListenFD: true,
		},
		{
			// -transparent on loopback: every client is the host's own, so
			// this measures what tells a local client apart (the peer
			// address accept4 fills in, the address lookup), not the bind
			// of a client from elsewhere, which hack/transparent-cost.sh
			// measures in namespaces. Needs CAP_NET_ADMIN.
			Name: "hostproxy-transparent", Bin: hostproxyBin, Protos: []string{"tcp"},
			NoProto: map[string]string{"udp": "measured for TCP only"},
			Args:    append(slices.Clone(compat), "-use-listen-fd", "-transparent"),
			Head:    []string{"-transparent"},
			Each:    []string{"-L", "{host_ip}:{host_port}:{backend_ip}:{backend_port}/{proto}"},
			Status:  true, EachStatus: true, ListenFD: true,
		},
		{
			// Docker 20.10's docker-proxy has no -use-listen-fd: it binds
			// the host port itself.
			Name: "docker-proxy", Bin: "docker-proxy", Protos: []string{"tcp", "udp"},
			Args: compat, Status: true,
		},
		{
			Name: "socat", Bin: "socat", Protos: []string{"tcp"},
			NoProto: map[string]string{"udp": "socat's UDP-LISTEN,fork forks a process per client and cannot take a flood of flows"},
			// The default backlog of 5 would measure socat's listen queue,
			// not its relay.
			Args: []string{"TCP-LISTEN:{host_port},bind={host_ip},reuseaddr,fork,backlog=4096", "TCP:{backend_ip}:{backend_port}"},
		},
		{
			Name: "haproxy", Bin: "haproxy", Protos: []string{"tcp"},
			NoProto: map[string]string{"udp": "HAProxy does not proxy UDP"},
			Args:    []string{"-f", "{config}", "-db"},
			Config:  template.Must(template.New("haproxy").Parse(haproxyConfig)),
		},
		{
			Name: "nginx", Bin: "nginx", Protos: []string{"tcp", "udp"},
			Args:   []string{"-p", "{prefix}", "-e", "{prefix}/error.log", "-c", "{config}"},
			Config: template.Must(template.New("nginx").Parse(nginxConfig)),
		},
	}
}

// checkPeer returns nil when p can run here, or the reason it cannot.
func checkPeer(p *peerSpec) error {
	if p.Name == "direct" {
		return nil
	}
	if p.Missing != "" {
		return errors.New(p.Missing)
	}
	if p.Bin == "" {
		return errors.New("no executable")
	}
	if _, err := exec.LookPath(p.Bin); err != nil {
		return fmt.Errorf("%s not found: %w", p.Bin, err)
	}
	if p.Name == "nginx" {
		const mod = "/usr/lib/nginx/modules/ngx_stream_module.so"
		if _, err := os.Stat(mod); err != nil {
			return fmt.Errorf("nginx stream module missing (apt install libnginx-mod-stream): %w", err)
		}
	}
	return nil
}

// instance is a running proxy under test: one process, or one per mapping.
type instance struct {
	peer  *peerSpec
	dir   string
	procs []*proc
}

type proc struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd.Wait returns
	stderr *limitedBuffer
}

// limitedBuffer keeps the first 4 KiB written to it, for error messages.
// The process's output is copied into it by os/exec while the harness may
// read it, hence the lock.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 4096 - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// firstLine returns what a process printed as one line of at most 300
// bytes.
func (b *limitedBuffer) firstLine() string {
	b.mu.Lock()
	out := b.buf.String()
	b.mu.Unlock()
	var ls []string
	for l := range strings.Lines(out) {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	s := strings.Join(ls, " | ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// pids returns the process ids of the instance's top-level processes.
func (in *instance) pids() []int {
	var ps []int
	for _, p := range in.procs {
		ps = append(ps, p.cmd.Process.Pid)
	}
	return ps
}

// exited returns how the first of the instance's processes that has exited
// ended, with what it printed, or "" while all run.
func (in *instance) exited() string {
	for _, pr := range in.procs {
		select {
		case <-pr.done:
			return fmt.Sprintf("%s exited: %v (stderr: %q)", in.peer.Bin, pr.cmd.ProcessState, pr.stderr.firstLine())
		default:
		}
	}
	return ""
}

// startTimeout bounds how long a peer may take to become ready.
const startTimeout = 10 * time.Second

// start runs peer p serving maps, filling in each mapping's host port where
// it is 0, and waits until the peer is ready: "0\n" on fd 3 from every
// process for peers with a status pipe, otherwise every mapping forwarding
// (an echo round trip when probe says the backends echo, else a TCP
// connect). It returns the instance and the time from the first spawn to
// ready. On error nothing is left running.
func start(ctx context.Context, p *peerSpec, maps []mapping, probe bool) (*instance, time.Duration, error) {
	in := &instance{peer: p}
	fail := func(err error) (*instance, time.Duration, error) {
		in.stop()
		return nil, 0, fmt.Errorf("start %s: %w", p.Name, err)
	}
	var err error
	if p.Config != nil {
		if in.dir, err = os.MkdirTemp("", "hostproxy-bench-"+p.Name+"-"); err != nil {
			return fail(err)
		}
	}
	// Ports: with fd 4 the harness binds the host socket; otherwise it picks
	// a free port and the peer binds it.
	var files []*os.File
	var holds []io.Closer
	defer func() {
		for _, f := range files {
			f.Close()
		}
		for _, c := range holds {
			c.Close()
		}
	}()
	for i := range maps {
		if maps[i].Host.Port() != 0 {
			continue
		}
		if p.ListenFD && len(maps) == 1 {
			proto, _ := sockopt.ParseProto(maps[i].Proto)
			f, err := sockopt.Listen(proto, netip.AddrPortFrom(maps[i].Host.Addr(), 0), sockopt.Options{})
			if err != nil {
				return fail(err)
			}
			files = append(files, f)
			info, err := sockopt.Inspect(f)
			if err != nil {
				return fail(err)
			}
			maps[i].Host = info.Local
			continue
		}
		port, c, err := freePort(maps[i].Proto, maps[i].Host.Addr())
		if err != nil {
			return fail(err)
		}
		holds = append(holds, c)
		maps[i].Host = netip.AddrPortFrom(maps[i].Host.Addr(), port)
	}
	// The picked ports stay bound until all are picked, so none repeats.
	for _, c := range holds {
		c.Close()
	}
	holds = nil

	// Commands.
	var argvs [][]string
	switch {
	case p.Config != nil:
		var buf bytes.Buffer
		if err := p.Config.Execute(&buf, configData{Prefix: in.dir, Maps: maps}); err != nil {
			return fail(fmt.Errorf("config template: %w", err))
		}
		vars := mappingVars(maps[0], in.dir)
		if err := os.WriteFile(vars["config"], buf.Bytes(), 0o644); err != nil {
			return fail(err)
		}
		argv, err := expandArgs(p.Args, vars)
		if err != nil {
			return fail(err)
		}
		argvs = append(argvs, argv)
	case len(maps) > 1 && p.Each != nil:
		argv, err := expandArgs(p.Head, nil)
		if err != nil {
			return fail(err)
		}
		for _, m := range maps {
			each, err := expandArgs(p.Each, mappingVars(m, in.dir))
			if err != nil {
				return fail(err)
			}
			argv = append(argv, each...)
		}
		argvs = append(argvs, argv)
	default:
		for _, m := range maps {
			argv, err := expandArgs(p.Args, mappingVars(m, in.dir))
			if err != nil {
				return fail(err)
			}
			argvs = append(argvs, argv)
		}
	}
	useStatus := p.Status && (p.EachStatus || !(len(maps) > 1 && p.Each != nil))

	t0 := time.Now()
	var statuses []*os.File
	defer func() {
		for _, f := range statuses {
			f.Close()
		}
	}()
	for i, argv := range argvs {
		cmd := exec.Command(p.Bin, argv...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		pr := &proc{cmd: cmd, done: make(chan struct{}), stderr: &limitedBuffer{}}
		cmd.Stdout = pr.stderr
		cmd.Stderr = pr.stderr
		var w *os.File
		if useStatus {
			r, wr, err := os.Pipe()
			if err != nil {
				return fail(err)
			}
			statuses = append(statuses, r)
			w = wr
			cmd.ExtraFiles = append(cmd.ExtraFiles, w)
			if p.ListenFD && i < len(files) {
				cmd.ExtraFiles = append(cmd.ExtraFiles, files[i])
			}
		}
		err := startProxy(cmd)
		if w != nil {
			w.Close()
		}
		if err != nil {
			return fail(fmt.Errorf("spawn %s: %w", p.Bin, err))
		}
		in.procs = append(in.procs, pr)
		go func() { cmd.Wait(); close(pr.done) }()
	}
	deadline := t0.Add(startTimeout)
	for i, r := range statuses {
		if err := readStatus(r, deadline); err != nil {
			return fail(fmt.Errorf("%s: %w (stderr: %q)", maps[i].Host, err, in.procs[i].stderr.firstLine()))
		}
	}
	if !useStatus {
		for _, m := range maps {
			if err := waitServing(ctx, in, m, probe, deadline); err != nil {
				return fail(err)
			}
		}
	}
	return in, time.Since(t0), nil
}

// readStatus reads docker-proxy's start-up status from the fd 3 pipe:
// "0\n" is success, "1\n" followed by a reason is failure.
func readStatus(r *os.File, deadline time.Time) error {
	_ = r.SetReadDeadline(deadline)
	br := bufio.NewReader(io.LimitReader(r, 1024))
	line, err := br.ReadString('\n')
	switch {
	case line == "0\n":
		return nil
	case line != "" && (err == nil || errors.Is(err, io.EOF)):
		rest, _ := io.ReadAll(br)
		return fmt.Errorf("status %q: %s", strings.TrimSpace(line), strings.TrimSpace(string(rest)))
	case errors.Is(err, io.EOF):
		return errors.New("status pipe closed without a status")
	default:
		return fmt.Errorf("read status: %w", err)
	}
}

// waitServing polls m until it forwards: an echo round trip when probe is
// set, otherwise a TCP connect (UDP mappings are always probed).
func waitServing(ctx context.Context, in *instance, m mapping, probe bool, deadline time.Time) error {
	for attempt := 0; ; attempt++ {
		for _, pr := range in.procs {
			select {
			case <-pr.done:
				return fmt.Errorf("%s exited before serving %s/%s: %v (stderr: %q)",
					in.peer.Bin, m.Host, m.Proto, pr.cmd.ProcessState, pr.stderr.firstLine())
			default:
			}
		}
		err := probeOnce(m, probe)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/%s not serving after %v: %w", m.Host, m.Proto, startTimeout, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// Poll fast at first so start-up times stay accurate, then back off.
		pause := time.Millisecond
		if attempt > 200 {
			pause = 20 * time.Millisecond
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// probeOnce makes one readiness attempt on m.
func probeOnce(m mapping, echo bool) error {
	const wait = 50 * time.Millisecond
	c, err := net.DialTimeout(m.Proto, m.Host.String(), wait)
	if err != nil {
		return err
	}
	defer c.Close()
	if !echo && m.Proto == "tcp" {
		return nil
	}
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte{'?'}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	return nil
}

// freePort binds a kernel-chosen port on addr and returns it with the
// socket that holds it; the caller closes the socket before the peer binds.
func freePort(proto string, addr netip.Addr) (uint16, io.Closer, error) {
	ap := netip.AddrPortFrom(addr, 0)
	switch proto {
	case "udp":
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return 0, nil, fmt.Errorf("find a free port on %s/udp: %w", addr, err)
		}
		return c.LocalAddr().(*net.UDPAddr).AddrPort().Port(), c, nil
	default:
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
		if err != nil {
			return 0, nil, fmt.Errorf("find a free port on %s/tcp: %w", addr, err)
		}
		return ln.Addr().(*net.TCPAddr).AddrPort().Port(), ln, nil
	}
}

// stop ends every process of the instance (SIGTERM to its process group,
// SIGKILL after 5s) and removes its temp dir.
func (in *instance) stop() {
	if in == nil {
		return
	}
	for _, pr := range in.procs {
		syscall.Kill(-pr.cmd.Process.Pid, syscall.SIGTERM)
	}
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for _, pr := range in.procs {
		select {
		case <-pr.done:
		case <-deadline.C:
			// Timer fired once; kill this one and all after without waiting
			// again on the timer.
			for _, q := range in.procs {
				syscall.Kill(-q.cmd.Process.Pid, syscall.SIGKILL)
			}
			<-pr.done
		}
	}
	// Children left in a group (socat's per-connection forks, nginx's
	// workers) go too, and stop returns once they are gone: a peer still
	// exiting would slow the next one measured.
	for _, pr := range in.procs {
		syscall.Kill(-pr.cmd.Process.Pid, syscall.SIGKILL)
	}
	gone := time.Now().Add(5 * time.Second)
	for _, pr := range in.procs {
		for syscall.Kill(-pr.cmd.Process.Pid, 0) == nil && time.Now().Before(gone) {
			time.Sleep(time.Millisecond) // polling interval: the kernel tells no one when a group empties
		}
	}
	if in.dir != "" {
		os.RemoveAll(in.dir)
	}
}
