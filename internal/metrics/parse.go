package metrics

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Parse checks text against the rules of the text exposition format 0.0.4
// that Exposition follows and node_exporter's textfile collector relies on,
// and returns every sample's value by series, written name{labels} exactly
// as in the text (name alone when there are no labels). The rules: the text
// ends with a newline; every line is a comment or a sample; HELP and TYPE
// appear at most once per metric and before its samples; the samples of a
// metric are consecutive; a sample is name{label="value",...} (labels
// optional, values escaped with \\, \" and \n only), one space and a value,
// with no timestamp; no series repeats; a counter is not negative.
func Parse(text []byte) (map[string]float64, error) {
	if len(text) > 0 && text[len(text)-1] != '\n' {
		return nil, errors.New("the text does not end with a newline")
	}
	var (
		values  = make(map[string]float64)
		help    = make(map[string]bool)
		types   = make(map[string]string)
		sampled = make(map[string]bool) // metrics with samples
		current string                  // the metric of the last sample
	)
	lines := strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
	if len(text) == 0 {
		lines = nil
	}
	for n, line := range lines {
		fail := func(format string, args ...any) (map[string]float64, error) {
			return nil, fmt.Errorf("line %d %q: %s", n+1, line, fmt.Sprintf(format, args...))
		}
		if strings.HasPrefix(line, "#") {
			f := strings.SplitN(line, " ", 4)
			if len(f) < 3 || f[0] != "#" || f[1] != "HELP" && f[1] != "TYPE" {
				continue // another comment
			}
			name := f[2]
			if !validName(name, true) {
				return fail("invalid metric name %q", name)
			}
			if sampled[name] {
				return fail("%s after the samples of %s", f[1], name)
			}
			if f[1] == "HELP" {
				if help[name] {
					return fail("second HELP for %s", name)
				}
				help[name] = true
				continue
			}
			if _, ok := types[name]; ok {
				return fail("second TYPE for %s", name)
			}
			if len(f) != 4 {
				return fail("TYPE without a type")
			}
			switch f[3] {
			case "counter", "gauge", "untyped", "summary", "histogram":
				types[name] = f[3]
			default:
				return fail("unknown type %q", f[3])
			}
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if !validName(name, true) {
			return fail("invalid metric name %q", name)
		}
		if name != current && sampled[name] {
			return fail("the samples of %s are not consecutive", name)
		}
		current, sampled[name] = name, true
		key := name
		if strings.HasPrefix(rest, "{") {
			end, err := parseLabels(rest)
			if err != nil {
				return fail("%v", err)
			}
			key, rest = name+rest[:end], rest[end:]
		}
		v, ok := strings.CutPrefix(rest, " ")
		if !ok || v == "" {
			return fail("want one space and a value after the series")
		}
		if strings.Contains(v, " ") {
			return fail("more than a value after the series (a timestamp?)")
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fail("value: %v", err)
		}
		if types[name] == "counter" && x < 0 {
			return fail("negative counter")
		}
		if _, dup := values[key]; dup {
			return fail("series repeated")
		}
		values[key] = x
	}
	return values, nil
}

// parseLabels reads {name="value",...} at the start of s and returns the
// index just past the closing brace.
func parseLabels(s string) (int, error) {
	seen := map[string]bool{}
	i := 1
	for {
		if i < len(s) && s[i] == '}' && i == 1 {
			return i + 1, nil // {}
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			return 0, errors.New("label without '='")
		}
		label := s[i : i+eq]
		if !validName(label, false) {
			return 0, fmt.Errorf("invalid label name %q", label)
		}
		if seen[label] {
			return 0, fmt.Errorf("label %s repeated", label)
		}
		seen[label] = true
		i += eq + 1
		if i >= len(s) || s[i] != '"' {
			return 0, fmt.Errorf("label %s: value not quoted", label)
		}
		for i++; ; i++ {
			if i >= len(s) {
				return 0, fmt.Errorf("label %s: value not closed", label)
			}
			if s[i] == '"' {
				break
			}
			if s[i] == '\\' {
				if i+1 >= len(s) || !strings.ContainsRune(`\"n`, rune(s[i+1])) {
					return 0, fmt.Errorf("label %s: invalid escape", label)
				}
				i++
			}
		}
		i++ // past the closing quote
		switch {
		case i < len(s) && s[i] == '}':
			return i + 1, nil
		case i+1 < len(s) && s[i] == ',' && s[i+1] != '}':
			i++
		default:
			return 0, fmt.Errorf("label %s: want ',' and a label, or '}'", label)
		}
	}
}

// validName reports whether s is a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) or,
// without colons, a label name.
func validName(s string, colon bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || colon && c == ':' || i > 0 && c >= '0' && c <= '9'
		if !ok {
			return false
		}
	}
	return true
}
