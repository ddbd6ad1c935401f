package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeDNS is a name server on loopback (UDP and TCP on one port) that
// answers from a table, built with x/net's dnsmessage (compressed names),
// independently of the stub resolver's own encoding.
type fakeDNS struct {
	addr netip.AddrPort
	mu   sync.Mutex
	asks []string // "name type" of every question, in order
	// records maps "name." to its addresses; a name missing is NXDOMAIN.
	records map[string][]netip.Addr
	// cname maps "name." to the name it is an alias of.
	cname map[string]string
	// truncate makes every UDP answer empty and truncated.
	truncate bool
	// silent drops every UDP query.
	silent bool
}

func startFakeDNS(t *testing.T, f *fakeDNS) *fakeDNS {
	t.Helper()
	// A port free for both UDP and TCP: a few tries.
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		if pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		f.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
		if ln, err = net.Listen("tcp4", f.addr.String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("no port free for both UDP and TCP: %v", err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := f.answer(buf[:n], true); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, int(l[0])<<8|int(l[1]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				resp := f.answer(q, false)
				c.Write(append([]byte{byte(len(resp) >> 8), byte(len(resp))}, resp...))
			}()
		}
	}()
	return f
}

func (f *fakeDNS) answer(q []byte, udp bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if udp && f.silent {
		return nil
	}
	name := strings.ToLower(qs[0].Name.String())
	f.asks = append(f.asks, name+" "+qs[0].Type.String())
	rh := dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if udp && f.truncate {
		rh.Truncated = true
	}
	target := name
	if c, ok := f.cname[name]; ok {
		target = c
	}
	addrs, known := f.records[target]
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(qs[0])
	b.StartAnswers()
	if !(udp && f.truncate) {
		if target != name {
			b.CNAMEResource(dnsmessage.ResourceHeader{Name: qs[0].Name, Class: dnsmessage.ClassINET, TTL: 60},
				dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(target)})
		}
		rn := dnsmessage.MustNewName(target)
		for _, a := range addrs {
			rhdr := dnsmessage.ResourceHeader{Name: rn, Class: dnsmessage.ClassINET, TTL: 60}
			switch {
			case a.Is4() && qs[0].Type == dnsmessage.TypeA:
				b.AResource(rhdr, dnsmessage.AResource{A: a.As4()})
			case a.Is6() && qs[0].Type == dnsmessage.TypeAAAA:
				b.AAAAResource(rhdr, dnsmessage.AAAAResource{AAAA: a.As16()})
			}
		}
	}
	resp, err := b.Finish()
	if err != nil {
		return nil
	}
	return resp
}

func (f *fakeDNS) questions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asks)
}

func addrs(s ...string) []netip.Addr {
	var a []netip.Addr
	for _, x := range s {
		a = append(a, netip.MustParseAddr(x))
	}
	return a
}

func TestLookupDNS(t *testing.T) {
	srv := startFakeDNS(t, &fakeDNS{
		records: map[string][]netip.Addr{
			"db.corp.example.":    addrs("10.1.2.3", "10.1.2.4", "fd00::3"),
			"v6only.example.":     addrs("fd00::6"),
			"real.example.":       addrs("192.0.2.7"),
			"nodata.example.":     nil,
			"dotted.name.corp.":   addrs("10.9.9.9"),
			"dotted.name.":        addrs("10.8.8.8"),
			"www.example.":        nil,
			"corp.example.":       nil,
			"other.corp.example.": nil,
		},
		cname: map[string]string{"alias.example.": "real.example."},
	})
	c := &dnsConfig{servers: []netip.AddrPort{srv.addr}, search: []string{"corp.example.", "example."},
		ndots: 1, timeout: 2 * time.Second, attempts: 1}
	for _, tt := range []struct {
		name string
		want []netip.Addr
		asks []string // the questions sent, when checked
		err  error
	}{
		// One dot or more (ndots 1): the name as it is first.
		{name: "db.corp.example", want: addrs("10.1.2.3", "10.1.2.4", "fd00::3"),
			asks: []string{"db.corp.example. TypeA", "db.corp.example. TypeAAAA"}},
		// No dot: the search list first; NXDOMAIN skips the AAAA question.
		{name: "db", want: addrs("10.1.2.3", "10.1.2.4", "fd00::3"),
			asks: []string{"db.corp.example. TypeA", "db.corp.example. TypeAAAA"}},
		{name: "v6only", want: addrs("fd00::6"),
			asks: []string{"v6only.corp.example. TypeA", "v6only.example. TypeA", "v6only.example. TypeAAAA"}},
		{name: "alias.example", want: addrs("192.0.2.7")},
		{name: "ALIAS.Example.", want: addrs("192.0.2.7"), asks: []string{"alias.example. TypeA", "alias.example. TypeAAAA"}},
		{name: "nodata.example", err: errNoSuchHost},
		{name: "missing", err: errNoSuchHost,
			asks: []string{"missing.corp.example. TypeA", "missing.example. TypeA", "missing. TypeA"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(srv.questions())
			got, err := c.lookup(context.Background(), strings.ToLower(tt.name))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("lookup %s: %v, %v; want %v", tt.name, got, err, tt.err)
				}
			} else if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("lookup %s: %v, %v; want %v", tt.name, got, err, tt.want)
			}
			if asks := srv.questions()[before:]; tt.asks != nil && !slices.Equal(asks, tt.asks) {
				t.Errorf("questions %q, want %q", asks, tt.asks)
			}
		})
	}
}

// TestLookupTruncated: a truncated UDP answer is asked again over TCP.
func TestLookupTruncated(t *testing.T) {
	srv := startFakeDNS(t, &fakeDNS{truncate: true, records: map[string][]netip.Addr{"big.example.": addrs("10.0.0.1", "10.0.0.2")}})
	c := &dnsConfig{servers: []netip.AddrPort{srv.addr}, ndots: 1, timeout: 2 * time.Second, attempts: 1}
	got, err := c.lookup(context.Background(), "big.example")
	if err != nil || !slices.Equal(got, addrs("10.0.0.1", "10.0.0.2")) {
		t.Fatalf("lookup: %v, %v", got, err)
	}
	if asks := srv.questions(); len(asks) != 4 { // A over UDP and TCP, AAAA over UDP and TCP
		t.Errorf("questions %q, want each type twice", asks)
	}
}

// TestLookupTimeout: a server that never answers fails the lookup after
// the timeout of each attempt, and a silent first server gives way to the
// second.
func TestLookupTimeout(t *testing.T) {
	silent := startFakeDNS(t, &fakeDNS{silent: true})
	good := startFakeDNS(t, &fakeDNS{records: map[string][]netip.Addr{"x.example.": addrs("10.0.0.9")}})
	c := &dnsConfig{servers: []netip.AddrPort{silent.addr}, ndots: 1, timeout: 100 * time.Millisecond, attempts: 2}
	start := time.Now()
	if got, err := c.lookup(context.Background(), "x.example"); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("lookup from a silent server: %v, %v; want a time-out", got, err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("gave up after %v, before two attempts of 100ms", took)
	}
	c.servers = append(c.servers, good.addr)
	if got, err := c.lookup(context.Background(), "x.example"); err != nil || !slices.Equal(got, addrs("10.0.0.9")) {
		t.Fatalf("lookup with a second server: %v, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	c.servers, c.timeout = c.servers[:1], 5*time.Second
	start = time.Now()
	if _, err := c.lookup(ctx, "x.example"); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("lookup past the context's deadline: %v after %v", err, time.Since(start))
	}
}

func TestHostsLookup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	const hosts = "# comment\n127.0.0.1 localhost\n::1 localhost ip6-localhost\n" +
		"10.0.0.5 db db.local # the database\nnot-an-ip other\n\n192.0.2.1 DB\n::ffff:10.0.0.6 mapped\n"
	if err := os.WriteFile(path, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		want []netip.Addr
	}{
		{"localhost", addrs("127.0.0.1", "::1")},
		{"db", addrs("10.0.0.5", "192.0.2.1")},
		{"db.local", addrs("10.0.0.5")},
		{"mapped", addrs("10.0.0.6")},
		{"other", nil},
		{"nothere", nil},
	} {
		if got := hostsLookup(path, tt.name); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestReadResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	const conf = "# comment\nnameserver 10.0.0.53\nnameserver fd00::53 ; trailing\nnameserver bogus\n" +
		"domain ignored.example\nsearch a.example b.example.\noptions ndots:2 timeout:1 attempts:3 rotate\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c := readResolvConf(path)
	if want := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.53:53"), netip.MustParseAddrPort("[fd00::53]:53")}; !slices.Equal(c.servers, want) {
		t.Errorf("servers %v, want %v", c.servers, want)
	}
	if want := []string{"a.example.", "b.example."}; !slices.Equal(c.search, want) {
		t.Errorf("search %q, want %q", c.search, want)
	}
	if c.ndots != 2 || c.timeout != time.Second || c.attempts != 3 {
		t.Errorf("ndots %d timeout %v attempts %d, want 2 1s 3", c.ndots, c.timeout, c.attempts)
	}
	if want := []string{"x.y.a.example.", "x.y.b.example.", "x.y."}; !slices.Equal(c.names("x.y"), want) {
		t.Errorf("names of x.y %q, want %q", c.names("x.y"), want)
	}
	if want := []string{"x.y.z.", "x.y.z.a.example.", "x.y.z.b.example."}; !slices.Equal(c.names("x.y.z"), want) {
		t.Errorf("names of x.y.z %q, want %q", c.names("x.y.z"), want)
	}
	missing := readResolvConf(filepath.Join(t.TempDir(), "none"))
	if want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53"), netip.MustParseAddrPort("[::1]:53")}; !slices.Equal(missing.servers, want) {
		t.Errorf("servers without resolv.conf %v, want %v", missing.servers, want)
	}
}

// TestLookupMalformed: answers that do not parse, or answer another
// question, are errors and never addresses.
func TestLookupMalformed(t *testing.T) {
	q, err := dnsQuery(0x1234, "a.example.", dnsTypeA)
	if err != nil {
		t.Fatal(err)
	}
	resp := func(edit func([]byte) []byte) []byte {
		r := slices.Clone(q)
		r[2] |= 0x80
		r[7] = 1 // ANCOUNT
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1)
		return edit(r)
	}
	if got, err := dnsAnswer(resp(func(b []byte) []byte { return b }), q, dnsTypeA); err != nil || !slices.Equal(got, addrs("10.0.0.1")) {
		t.Fatalf("well-formed answer: %v, %v", got, err)
	}
	for name, edit := range map[string]func([]byte) []byte{
		"short rdata":     func(b []byte) []byte { return b[:len(b)-1] },
		"other id":        func(b []byte) []byte { b[1]++; return b },
		"not a response":  func(b []byte) []byte { b[2] &^= 0x80; return b },
		"other question":  func(b []byte) []byte { b[13] = 'b'; return b },
		"server failure":  func(b []byte) []byte { b[3] |= 2; return b },
		"looping pointer": func(b []byte) []byte { b[len(q)] = 0x40; return b },
		"no header":       func(b []byte) []byte { return b[:8] },
	} {
		if got, err := dnsAnswer(edit(resp(func(b []byte) []byte { return b })), q, dnsTypeA); err == nil {
			t.Errorf("%s: %v, nil; want an error", name, got)
		}
	}
	if _, err := dnsQuery(1, "a..example.", dnsTypeA); err == nil {
		t.Error("a name with an empty label was encoded")
	}
}
