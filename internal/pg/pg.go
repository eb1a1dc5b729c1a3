// Package pg is meterbase's thin layer over pgx: the DBTX seam every
// repository is built on, transactions that nest as savepoints, the squirrel
// builder with $n placeholders, and translation of driver errors into the
// library's own.
package pg

import (
	"context"

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

// InTx runs fn in a transaction on db and commits when fn returns nil. When db
// is already a transaction, fn runs in a savepoint instead, so a failure rolls
// back fn's work without aborting the caller's transaction.
func InTx(ctx context.Context, db DBTX, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db, fn)
}

// Now is the transaction's timestamp, for SET clauses.
var Now = sq.Expr("now()")
