package boltstore

import "errors"

var (
	// ErrLocked is returned by Open when another process holds the file open
	// (bbolt's file lock) for longer than Options.LockTimeout.
	ErrLocked = errors.New("embedded store is in use by another process")

	// ErrFormat is returned by Open when the file is neither a store written
	// by this package nor a lungo FileStore file, or has a format version
	// this build does not read.
	ErrFormat = errors.New("embedded store format not supported")

	// ErrClosed is returned by Load and Store after Close.
	ErrClosed = errors.New("embedded store closed")
)
