package migrations

import (
	"errors"
	"fmt"
)

var (
	// ErrDirty matches a *DirtyError with errors.Is.
	ErrDirty = errors.New("migrations: database is dirty")
	// ErrAhead matches an *AheadError with errors.Is.
	ErrAhead = errors.New("migrations: database is newer than this binary")
	// ErrLockTimeout matches a *LockTimeoutError with errors.Is.
	ErrLockTimeout = errors.New("migrations: lock timeout")
)

// DirtyError means a migration stopped part-way at Version and the schema is
// in an unknown state. Nothing runs until a person repairs the schema and
// calls Migrator.Force with the version it is really at.
//
// golang-migrate marks the version a file leads to dirty before the file
// runs. A file that runs as one transaction records its version, clean, in
// that transaction, so if it is dirty such a file did not commit: going up
// to Version, the schema is at Version-1; going down (Version+1's down
// file), it is at Version+1. A run that knows which leaves it clean
// itself; only a run that lost its connection, or its process, while the
// file ran leaves it dirty. A file that is not a transaction (CREATE INDEX
// CONCURRENTLY) may have done part of its work.
//
// A run that leaves the database dirty returns a DirtyError too, joined to
// the error that stopped it.
type DirtyError struct {
	Version uint
}

func (e *DirtyError) Error() string {
	return fmt.Sprintf("migrations: database is dirty at version %d: a migration stopped part-way; repair the schema by hand, then Force the version it is at", e.Version)
}

func (e *DirtyError) Is(target error) bool { return target == ErrDirty }

// AheadError means the database was migrated by a newer meterbase than this
// binary. Running older code against it is not guessed at; deploy the newer
// binary, or roll the schema back with that newer binary.
type AheadError struct {
	Database uint // version recorded in the database
	Binary   uint // newest version this binary knows
}

func (e *AheadError) Error() string {
	return fmt.Sprintf("migrations: database is at version %d but this binary only knows up to %d", e.Database, e.Binary)
}

func (e *AheadError) Is(target error) bool { return target == ErrAhead }

// FileError is a migration file that failed. When the file ran as one
// transaction the database is left at the previous version, clean, and the
// run can be retried. When it did not (CREATE INDEX CONCURRENTLY), or the
// run lost its connection while the file ran, the database is left dirty
// and the error also matches ErrDirty.
type FileError struct {
	Version uint
	Path    string
	Err     error
}

func (e *FileError) Error() string {
	return fmt.Sprintf("migrations: %s (version %d) failed: %v", e.Path, e.Version, e.Err)
}

func (e *FileError) Unwrap() error { return e.Err }

// LockTimeoutError means a migration file gave up waiting for a lock on a
// table it changes (SQLSTATE 55P03), because another session held a
// conflicting lock for longer than the file's lock_timeout. The file ran as
// one transaction, so nothing was changed and the database is clean at the
// previous version: run the migrations again once that session has finished
// (a long transaction, a report, a VACUUM FULL, another migration). Waiting
// longer is not the answer: while a migration waits for its lock, every query
// on that table queues behind it.
//
// It arrives wrapped in a *FileError that names the file.
type LockTimeoutError struct {
	Timeout string // the file's lock_timeout, e.g. "5s"; "" if it set none
	Err     error  // the Postgres error
}

func (e *LockTimeoutError) Error() string {
	timeout := e.Timeout
	if timeout == "" {
		timeout = "the session's"
	}
	return fmt.Sprintf("lock timeout: gave up after lock_timeout %s waiting for a lock on a table that another session is using; "+
		"nothing was changed, run the migrations again once that session has finished (%v)", timeout, e.Err)
}

func (e *LockTimeoutError) Is(target error) bool { return target == ErrLockTimeout }

func (e *LockTimeoutError) Unwrap() error { return e.Err }
