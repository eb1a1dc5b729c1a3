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
)

// DirtyError means a migration stopped part-way at Version and the schema is
// in an unknown state. Nothing runs until a person repairs the schema and
// calls Migrator.Force with the version it is really at.
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
// run can be retried; otherwise Status reports it dirty.
type FileError struct {
	Version uint
	Path    string
	Err     error
}

func (e *FileError) Error() string {
	return fmt.Sprintf("migrations: %s (version %d) failed: %v", e.Path, e.Version, e.Err)
}

func (e *FileError) Unwrap() error { return e.Err }
