// Command residency shows which parts of a hostproxy binary an idle
// process keeps resident, to explain a change of idle RSS between builds.
//
//	go run ./hack/residency [-windows [-list ADDR]] BIN [BIN...]
//
// Each BIN is started in docker-proxy's form on a free loopback port with
// fd 3 a pipe; 200 ms after it reports ready, /proc/PID/pagemap says which
// pages of the binary's own mapping are resident, and the process is
// stopped. Printed per BIN: the resident KiB of each ELF section; with
// -windows, also each resident 64 KiB window of .gopclntab and the
// packages whose functions' metadata (the _func record, or a pc-value
// table: pcsp, pcfile, pcln, pcdata) start in it, and with -list every
// piece of metadata in one window. On this kernel a page fault on a mapped
// file maps the 64 KiB window around it, so reading one function's metadata
// keeps the whole window resident: two builds whose windows differ show
// which functions' metadata moved into a window nothing else touched.
// Linux only; the pagemap's present bit needs no privilege.
package main

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	pageSize = 4096
	window   = 64 << 10 // the kernel's fault-around
)

func main() {
	windows := flag.Bool("windows", false, "list the resident 64 KiB windows of .gopclntab and the packages whose functions' metadata they hold")
	list := flag.String("list", "", "with -windows, also every piece of metadata in the window at this `address` (0x...)")
	flag.Parse()
	var at uint64
	if *list != "" {
		v, err := strconv.ParseUint(*list, 0, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "residency: -list %q: not an address\n", *list)
			os.Exit(2)
		}
		at = v
	}
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: go run ./hack/residency [-windows [-list ADDR]] BIN [BIN...]")
		os.Exit(2)
	}
	for _, bin := range flag.Args() {
		if err := report(bin, *windows, at); err != nil {
			fmt.Fprintf(os.Stderr, "residency: %s: %v\n", bin, err)
			os.Exit(1)
		}
	}
}

func report(bin string, windows bool, list uint64) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	f, err := elf.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	pages, err := residentPages(bin)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d KiB of the binary resident\n", bin, len(pages)*pageSize/1024)
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Addr == 0 {
			continue
		}
		n := 0
		for p := s.Addr &^ (pageSize - 1); p < s.Addr+s.Size; p += pageSize {
			if pages[p] {
				n++
			}
		}
		if n > 0 {
			fmt.Printf("  %-20s %6d KiB of %6d\n", s.Name, n*pageSize/1024, (s.Size+1023)/1024)
		}
	}
	if windows {
		return pclnWindows(f, pages, list)
	}
	return nil
}

// residentPages starts bin in docker-proxy's form, waits for "0\n" on fd 3
// and returns the resident pages of its mapping of bin, by address.
func residentPages(bin string) (map[uint64]bool, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(bin, "-proto", "tcp", "-host-ip", "127.0.0.1", "-host-port", strconv.Itoa(port),
		"-container-ip", "127.0.0.1", "-container-port", "9")
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	w.Close()
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	status := make([]byte, 64)
	n, err := r.Read(status)
	if err != nil || !strings.HasPrefix(string(status[:n]), "0") {
		return nil, fmt.Errorf("not ready: %q %v", status[:n], err)
	}
	time.Sleep(200 * time.Millisecond)

	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", cmd.Process.Pid))
	if err != nil {
		return nil, err
	}
	defer maps.Close()
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", cmd.Process.Pid))
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	pages := make(map[uint64]bool)
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != bin {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("maps line %q", sc.Text())
		}
		entries := make([]byte, (end-start)/pageSize*8)
		if _, err := pm.ReadAt(entries, int64(start/pageSize*8)); err != nil && err != io.EOF {
			return nil, fmt.Errorf("pagemap: %w", err)
		}
		for i := 0; i < len(entries); i += 8 {
			if binary.LittleEndian.Uint64(entries[i:])>>63 != 0 {
				pages[start+uint64(i/8)*pageSize] = true
			}
		}
	}
	return pages, sc.Err()
}

// pclnWindows prints each resident 64 KiB window of .gopclntab and the
// functions whose metadata start in it. The table's layout is Go 1.20's and
// later: a header (magic 0xfffffff1, nfunc at 8, the offsets of the name
// table at 32, of the pc-value tables at 56, of the function table at 64),
// then per function an {entry, _func offset} pair and a _func record
// (pcsp, pcfile, pcln at 16, 20, 24; npcdata at 28; the pcdata offsets at
// 44).
func pclnWindows(f *elf.File, pages map[uint64]bool, list uint64) error {
	s := f.Section(".gopclntab")
	if s == nil {
		return fmt.Errorf("no .gopclntab")
	}
	d, err := s.Data()
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	if len(d) < 72 || le.Uint32(d) != 0xfffffff1 {
		return fmt.Errorf(".gopclntab: not the Go 1.20+ layout")
	}
	u64 := func(o int) int { return int(le.Uint64(d[o:])) }
	nfunc, nameOff, pctabOff, pclnOff := u64(8), u64(32), u64(56), u64(64)
	name := func(off int) string {
		b := d[nameOff+off:]
		if i := strings.IndexByte(string(b[:min(len(b), 512)]), 0); i >= 0 {
			return string(b[:i])
		}
		return "?"
	}
	// Functions by the window (section offset of its start address) each
	// piece of their metadata starts in.
	byWindow := make(map[uint64][]string)
	add := func(off int, fn, what string) {
		va := s.Addr + uint64(off)
		w := va &^ (window - 1)
		byWindow[w] = append(byWindow[w], fn+" "+what)
	}
	for i := range nfunc {
		fo := pclnOff + int(le.Uint32(d[pclnOff+i*8+4:]))
		if fo+44 > len(d) {
			return fmt.Errorf(".gopclntab: function %d out of range", i)
		}
		fn := name(int(int32(le.Uint32(d[fo+4:]))))
		add(fo, fn, "_func")
		for k, what := range []string{"pcsp", "pcfile", "pcln"} {
			if v := int(le.Uint32(d[fo+16+4*k:])); v != 0 {
				add(pctabOff+v, fn, what)
			}
		}
		npcdata := int(le.Uint32(d[fo+28:]))
		for k := range npcdata {
			if v := int(le.Uint32(d[fo+44+4*k:])); v != 0 {
				add(pctabOff+v, fn, "pcdata"+strconv.Itoa(k))
			}
		}
	}
	var wins []uint64
	for w := s.Addr &^ (window - 1); w < s.Addr+s.Size; w += window {
		for p := w; p < w+window; p += pageSize {
			if pages[p] {
				wins = append(wins, w)
				break
			}
		}
	}
	fmt.Printf("  .gopclntab at %#x: %d resident 64 KiB windows\n", s.Addr, len(wins))
	for _, w := range wins {
		items := byWindow[w]
		fmt.Printf("    %#x: %d pieces of metadata start here%s\n", w, len(items), packages(items))
		if w == list {
			for _, it := range items {
				fmt.Printf("      %s\n", it)
			}
		}
	}
	return nil
}

// packages names the packages the functions of items belong to, most
// frequent first, at most five.
func packages(items []string) string {
	count := make(map[string]int)
	for _, it := range items {
		fn, _, _ := strings.Cut(it, " ")
		dir := fn[:strings.LastIndexByte(fn, '/')+1] // "" for a top-level package
		name, _, _ := strings.Cut(fn[len(dir):], ".")
		count[dir+name]++
	}
	pkgs := make([]string, 0, len(count))
	for p := range count {
		pkgs = append(pkgs, p)
	}
	sort.Slice(pkgs, func(i, j int) bool {
		if count[pkgs[i]] != count[pkgs[j]] {
			return count[pkgs[i]] > count[pkgs[j]]
		}
		return pkgs[i] < pkgs[j]
	})
	if len(pkgs) > 5 {
		pkgs = pkgs[:5]
	}
	if len(pkgs) == 0 {
		return ""
	}
	return ": " + strings.Join(pkgs, ", ")
}
