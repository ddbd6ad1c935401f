package metrics

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces the file at path with data so that a reader sees
// either the old file or the new one whole, never a part: data goes to a
// new file in the same directory (a hidden name that does not end in
// .prom, which the textfile collector ignores), is flushed to disk, made
// readable by all (0644) and renamed over path.
func WriteFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	return nil
}

// CheckPath reports, as an error that names the path, why WriteFile could
// not write path: its directory is missing, is not a directory or is not
// writable, or path itself is a directory. It creates and removes a
// temporary file to find out.
func CheckPath(path string) error {
	if path == "" || os.IsPathSeparator(path[len(path)-1]) {
		return fmt.Errorf("metrics file %q: want a file name, not a directory", path)
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("metrics file %s: is a directory", path)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("metrics file %s: directory %s: %w", path, dir, errors.Unwrap(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("metrics file %s: %s is not a directory", path, dir)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("metrics file %s: directory %s not writable: %w", path, dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}
