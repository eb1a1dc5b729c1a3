package tenancy

import (
	"errors"
	"fmt"

	"github.com/meterbase/meterbase/internal/pg"
)

var (
	// ErrNotFound means the row does not exist in this tenant (it may exist
	// in another, which is the same thing to the caller).
	ErrNotFound = errors.New("tenancy: not found")
	// ErrInvalidInput matches every *InvalidInputError and *InvalidIDError.
	ErrInvalidInput = errors.New("tenancy: invalid input")
	// ErrEmailTaken means another user already has the email.
	ErrEmailTaken = errors.New("tenancy: email already taken")
	// ErrAlreadyMember means the user already belongs to the workspace.
	ErrAlreadyMember = errors.New("tenancy: already a member")
	// ErrNotMember means the user does not belong to the workspace.
	ErrNotMember = errors.New("tenancy: not a member of the workspace")
	// ErrLastOwner means the change would leave the workspace without an owner.
	ErrLastOwner = errors.New("tenancy: a workspace must keep at least one owner")
	// ErrForbidden matches every *ForbiddenError.
	ErrForbidden = errors.New("tenancy: forbidden")
	// ErrUnsafeSQL means a builder was given SQL that could escape the
	// tenant's predicate, or tried to read or write a tenant column.
	ErrUnsafeSQL = errors.New("tenancy: unsafe SQL")
)

// InvalidIDError is an id that is zero or malformed.
type InvalidIDError struct {
	Kind   string // "workspace" or "user"
	Value  string // the text given, when parsing
	Reason string
}

func (e *InvalidIDError) Error() string {
	if e.Value != "" {
		return fmt.Sprintf("tenancy: invalid %s id %q: %s", e.Kind, e.Value, e.Reason)
	}
	return fmt.Sprintf("tenancy: invalid %s id: %s", e.Kind, e.Reason)
}

func (e *InvalidIDError) Is(target error) bool { return target == ErrInvalidInput }

// InvalidInputError is an argument refused before any SQL ran.
type InvalidInputError struct {
	Field  string
	Reason string
}

func (e *InvalidInputError) Error() string {
	return fmt.Sprintf("tenancy: invalid %s: %s", e.Field, e.Reason)
}

func (e *InvalidInputError) Is(target error) bool { return target == ErrInvalidInput }

// ForbiddenError means the user is a member, with a role below the one the
// action needs.
type ForbiddenError struct {
	User UserID
	Have Role
	Need Role
}

func (e *ForbiddenError) Error() string {
	return fmt.Sprintf("tenancy: user %s is %s, the action needs %s", e.User, e.Have, e.Need)
}

func (e *ForbiddenError) Is(target error) bool { return target == ErrForbidden }

// Errors of the statements a Tenant runs, translated from Postgres. A
// statement that finds no row for QueryRow gives ErrNotFound.
var (
	// ErrRetryable is a serialization failure or a deadlock: the transaction
	// lost a race with a concurrent one and may succeed if run again.
	ErrRetryable = pg.ErrSerialization
	// ErrLockTimeout means a lock was not granted within lock_timeout.
	ErrLockTimeout = pg.ErrLockNotAvailable
	// The constraint kinds; a *ConstraintError names the constraint.
	ErrUniqueViolation     = pg.ErrUniqueViolation
	ErrForeignKeyViolation = pg.ErrForeignKeyViolation
	ErrCheckViolation      = pg.ErrCheckViolation
	ErrNotNullViolation    = pg.ErrNotNullViolation
)

// ConstraintError is a violated constraint: its kind (errors.Is
// ErrUniqueViolation and the like), table and name.
type ConstraintError = pg.ConstraintError

// mapError translates a driver error, keeping whatever wrapped it.
func mapError(err error) error {
	if errors.Is(err, pg.ErrRawTransaction) {
		return &InvalidInputError{Field: "db", Reason: pg.ErrRawTransaction.Error()}
	}
	err = pg.MapError(err)
	switch {
	case err == pg.ErrNoRows:
		return ErrNotFound
	case errors.Is(err, pg.ErrNoRows) && !errors.Is(err, ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}
