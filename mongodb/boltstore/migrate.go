package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/256dpi/lungo"
)

type fileKind int

const (
	kindNew fileKind = iota
	kindBolt
	kindFileStore
)

// boltMagic is bbolt's meta page magic, at offset 16 of the file (after the
// page header).
const boltMagic = 0xED0CDAED

// detect tells a bbolt store from a lungo FileStore file (one BSON document:
// its first four bytes are its length, which is the file's size).
func detect(path string) (fileKind, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return kindNew, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return kindNew, nil
	}
	hdr := make([]byte, 20)
	n, err := io.ReadFull(f, hdr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return 0, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	hdr = hdr[:n]
	switch {
	case n == 20 && binary.LittleEndian.Uint32(hdr[16:]) == boltMagic:
		return kindBolt, nil
	case n >= 5 && int64(binary.LittleEndian.Uint32(hdr)) == fi.Size():
		return kindFileStore, nil
	}
	return 0, fmt.Errorf("open embedded store %s: %w: the file is neither a godwit embedded store nor a lungo FileStore file; check the lungo: path", path, ErrFormat)
}

// migrate converts the lungo FileStore file at path into a store. The new
// store is written to a temporary file next to it and renamed over path only
// when complete; the original stays as the returned backup (a hard link, or
// a copy where links are not supported). A crash at any point leaves either
// the original file or the complete store at path.
func migrate(path string) (string, error) {
	cat, err := lungo.NewFileStore(path, 0o600).Load()
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".converting-*")
	if err != nil {
		return "", err
	}
	tmpPath := tmp.Name()
	_ = tmp.Close()
	done := false
	defer func() {
		if !done {
			_ = os.Remove(tmpPath)
			_ = os.Remove(walPath(tmpPath))
		}
	}()
	if err := os.Remove(tmpPath); err != nil { // bbolt creates it
		return "", err
	}
	s, err := openBolt(tmpPath, Options{LockTimeout: 1})
	if err != nil {
		return "", err
	}
	if err := s.Store(cat); err != nil {
		_ = s.Close()
		return "", err
	}
	if err := s.Close(); err != nil {
		return "", err
	}
	// Close checkpointed everything into the file: its log is empty.
	if err := os.Remove(walPath(tmpPath)); err != nil {
		return "", err
	}
	backup := path + ".filestore.bak"
	for i := 1; ; i++ {
		if _, err := os.Lstat(backup); errors.Is(err, os.ErrNotExist) {
			break
		}
		backup = path + ".filestore.bak." + strconv.Itoa(i)
	}
	if err := os.Link(path, backup); err != nil {
		if err := copyFile(path, backup); err != nil {
			return "", fmt.Errorf("back up: %w", err)
		}
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return "", err
	}
	done = true
	if err := syncDir(filepath.Dir(path)); err != nil {
		return "", err
	}
	return backup, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
