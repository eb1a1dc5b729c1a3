package pg

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Kinds of database failure the library reacts to. Public packages translate
// them into their own exported errors; they never reach a host raw.
var (
	ErrNoRows              = errors.New("no rows")
	ErrUniqueViolation     = errors.New("unique violation")
	ErrForeignKeyViolation = errors.New("foreign key violation")
	ErrCheckViolation      = errors.New("check violation")
	ErrNotNullViolation    = errors.New("not null violation")
	ErrSerialization       = errors.New("serialization failure")
	ErrLockNotAvailable    = errors.New("lock not available")
	// ErrNoTenantContext: row-level security binds the connection's role
	// and the statement's transaction set no meterbase context at all, so
	// the policies refused to answer rather than return nothing.
	ErrNoTenantContext = errors.New("no tenant context")
)

// ConstraintError is a failed constraint, named so that a caller can tell
// which rule was broken (a taken email from a duplicate id, say).
type ConstraintError struct {
	Kind       error  // one of the Err*Violation sentinels
	Table      string // table the constraint belongs to
	Constraint string // constraint or index name
	Detail     string // the server's detail line
	err        error  // the error translated, with whatever wrapped it
}

func (e *ConstraintError) Error() string {
	return fmt.Sprintf("%v: constraint %q on %q: %v", e.Kind, e.Constraint, e.Table, e.err)
}

// Is makes errors.Is(err, pg.ErrUniqueViolation) and friends work.
func (e *ConstraintError) Is(target error) bool { return target == e.Kind }

// Unwrap exposes the driver error for callers that need the full report.
func (e *ConstraintError) Unwrap() error { return e.err }

// Postgres SQLSTATE codes, https://www.postgresql.org/docs/current/errcodes-appendix.html
const (
	codeUniqueViolation      = "23505"
	codeForeignKeyViolation  = "23503"
	codeCheckViolation       = "23514"
	codeNotNullViolation     = "23502"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
	codeLockNotAvailable     = "55P03"
	// meterbase's own, raised by its row-level security policies
	// (migrations/sql/0005_force_row_level_security.up.sql).
	codeNoTenantContext = "MB001"
)

// MapError translates pgx.ErrNoRows and the Postgres error codes the library
// cares about; anything else is returned unchanged. The translation wraps
// err, so whatever context a caller added stays in the message and in the
// chain, and an error translated once is left as it is.
func MapError(err error) error {
	if err == nil {
		return nil
	}
	var ce *ConstraintError
	if errors.As(err, &ce) || errors.Is(err, ErrNoRows) || errors.Is(err, ErrSerialization) || errors.Is(err, ErrLockNotAvailable) || errors.Is(err, ErrNoTenantContext) {
		return err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		if err == pgx.ErrNoRows {
			return ErrNoRows
		}
		return fmt.Errorf("%w: %w", ErrNoRows, err)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	constraint := func(kind error) error {
		return &ConstraintError{Kind: kind, Table: pgErr.TableName, Constraint: pgErr.ConstraintName, Detail: pgErr.Detail, err: err}
	}
	switch pgErr.Code {
	case codeUniqueViolation:
		return constraint(ErrUniqueViolation)
	case codeForeignKeyViolation:
		return constraint(ErrForeignKeyViolation)
	case codeCheckViolation:
		return constraint(ErrCheckViolation)
	case codeNotNullViolation:
		return constraint(ErrNotNullViolation)
	case codeSerializationFailure, codeDeadlockDetected:
		return fmt.Errorf("%w: %w", ErrSerialization, err)
	case codeLockNotAvailable:
		return fmt.Errorf("%w: %w", ErrLockNotAvailable, err)
	case codeNoTenantContext:
		return fmt.Errorf("%w: %w", ErrNoTenantContext, err)
	}
	return err
}

// IsRetryable reports whether err is a failure that the same transaction may
// succeed on when run again from the start.
func IsRetryable(err error) bool {
	return errors.Is(MapError(err), ErrSerialization)
}
