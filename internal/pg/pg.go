// Package pg is meterbase's thin layer over pgx: the DBTX seam every
// repository is built on, transactions that nest as savepoints, the squirrel
// builder with $n placeholders, and translation of driver errors into the
// library's own.
package pg

import (
	"context"
	"errors"
	"reflect"
	"time"

	sq "github.com/Masterminds/squirrel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DBTX is what a repository needs from the host's connection. It is satisfied
// by *pgxpool.Pool, *pgx.Conn and pgx.Tx, so a call made with a pgx.Tx joins
// the caller's transaction and a call made with a pool runs on its own.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

var (
	_ DBTX = (*pgxpool.Pool)(nil)
	_ DBTX = (*pgx.Conn)(nil)
	_ DBTX = (pgx.Tx)(nil)
)

// SQ builds statements with PostgreSQL's $n placeholders.
var SQ = sq.StatementBuilder.PlaceholderFormat(sq.Dollar)

// CleanupTimeout bounds the statements that undo a failed unit of work.
// They run with a context of their own: the caller's may be the reason the
// work failed.
const CleanupTimeout = 5 * time.Second

// Detached returns a context that keeps ctx's values but not its end,
// bounded by CleanupTimeout, for finishing or undoing work that must not
// be left half-done because the caller stopped waiting.
func Detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), CleanupTimeout)
}

// InTx runs fn in a transaction on db and commits when fn returns nil. When
// db is already a transaction, fn runs in a savepoint instead, so a failure
// rolls back fn's work without aborting the caller's transaction.
//
// Finishing does not depend on ctx once fn has returned: the commit (or
// release) and, on any failure or panic, the rollback run with Detached.
// A rollback that still fails leaves the connection closed, so that a
// host's transaction cannot go on to commit part of fn's work (pgx closes
// it itself when a top-level rollback fails; a savepoint's is closed here).
func InTx(ctx context.Context, db DBTX, fn func(tx pgx.Tx) error) (err error) {
	// pgx does not know of a transaction begun on a *pgx.Conn with a raw
	// BEGIN: its Begin would send a BEGIN of its own (a warning, not an
	// error) and the COMMIT after fn would commit the host's transaction
	// with it. Refused: the host passes the pgx.Tx of conn.Begin instead.
	if conn, ok := db.(*pgx.Conn); ok && conn.PgConn().TxStatus() != 'I' {
		return ErrRawTransaction
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if done {
			return
		}
		cctx, cancel := Detached(ctx)
		defer cancel()
		if rerr := tx.Rollback(cctx); rerr != nil && !errors.Is(rerr, pgx.ErrTxClosed) {
			if conn := tx.Conn(); conn != nil && !conn.IsClosed() {
				_ = conn.PgConn().Conn().Close()
			}
			err = errors.Join(err, &rollbackError{err: rerr})
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	cctx, cancel := Detached(ctx)
	defer cancel()
	if err = tx.Commit(cctx); err != nil {
		return err
	}
	done = true
	return nil
}

// ErrRawTransaction is a *pgx.Conn lent inside a transaction begun with a
// raw BEGIN, which pgx does not know of.
var ErrRawTransaction = errors.New("the *pgx.Conn is inside a transaction begun with a raw BEGIN, which pgx cannot nest in; pass the pgx.Tx of conn.Begin instead")

// rollbackError is a rollback that failed, after which the connection was
// closed.
type rollbackError struct{ err error }

func (e *rollbackError) Error() string {
	return "roll back (the connection was closed): " + e.err.Error()
}

func (e *rollbackError) Unwrap() error { return e.err }

// RollbackFailed reports whether err says that InTx could not roll back.
func RollbackFailed(err error) bool {
	var rb *rollbackError
	return errors.As(err, &rb)
}

// IsNil reports whether db is nil, typed nil included (a nil *pgxpool.Pool
// in a DBTX is not == nil, and would panic on first use).
func IsNil(db any) bool {
	if db == nil {
		return true
	}
	switch v := reflect.ValueOf(db); v.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
		return v.IsNil()
	}
	return false
}

// Now is the transaction's timestamp, for SET clauses.
var Now = sq.Expr("now()")
