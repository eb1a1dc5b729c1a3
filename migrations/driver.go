package migrations

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// versionLockTimeout bounds every wait of the migrator's own statements on
// the version table (a host's session holding a row of it, say), as the
// files bound theirs.
const versionLockTimeout = "5s"

// connDriver is golang-migrate's database.Driver on the one connection that
// holds the migration advisory lock: the files run and the version table is
// written in the session that serialises the runs, so losing that session
// stops the run instead of letting another migrator in beside it.
//
// golang-migrate's own pgx driver does not fit: it waits for an advisory
// lock of its own with context.Background() (when it is opened, before any
// wrapper could step in, and before each run), which strands a pooled
// connection for as long as anything holds that key; and it writes the
// version with TRUNCATE, whose ACCESS EXCLUSIVE lock any reader of the
// version table blocks.
//
// Once a step has started, every statement runs to its end, bounded by
// lock_timeout and the files' statement_timeout rather than by the caller's
// context: pgx closes a connection whose context ends mid-statement, and
// with it the lock. The Migrator checks the context between steps.
type connDriver struct {
	ctx         context.Context // the run's, without its cancellation
	conn        *pgx.Conn
	table       string // the version table, schema-qualified and quoted
	lockTimeout string

	// What the step under way got to; the Migrator resets it before each.
	ran    bool  // the file was sent
	runErr error // and what came of it
}

var _ database.Driver = (*connDriver)(nil)

func (d *connDriver) Open(string) (database.Driver, error) {
	return nil, errors.New("migrations: connDriver is not opened by URL")
}

// Close leaves the connection open: it belongs to the Migrator's run.
func (d *connDriver) Close() error { return nil }

// Lock does nothing: the Migrator holds its own advisory lock, taken with
// the caller's context, for the whole run, on this very connection.
func (d *connDriver) Lock() error { return nil }

// Unlock does nothing; see Lock.
func (d *connDriver) Unlock() error { return nil }

// Run sends the file as one query string. Without arguments pgx uses the
// simple protocol, so Postgres runs the whole string as one implicit
// transaction, the version record the source appended included.
func (d *connDriver) Run(migration io.Reader) error {
	raw, err := io.ReadAll(migration)
	if err != nil {
		return err
	}
	sql := string(raw)
	d.ran = true
	_, d.runErr = d.conn.Exec(d.ctx, sql)
	if d.runErr == nil {
		return nil
	}
	// queryCause reads golang-migrate's database.Error, as its own drivers
	// return it.
	dbErr := database.Error{OrigErr: d.runErr, Err: "migration failed", Query: raw}
	if pgErr := (*pgconn.PgError)(nil); errors.As(d.runErr, &pgErr) && pgErr.Position > 0 {
		dbErr.Line = lineOf(sql, int(pgErr.Position))
	}
	return dbErr
}

// lineOf returns the line of sql that Postgres's error position (1-based,
// in characters) points at.
func lineOf(sql string, position int) uint {
	line, chars := uint(1), 0
	for _, r := range sql {
		chars++
		if chars >= position {
			break
		}
		if r == '\n' {
			line++
		}
	}
	return line
}

// SetVersion writes the version table in a transaction of its own, as
// golang-migrate asks before a file (dirty) and after it (clean).
func (d *connDriver) SetVersion(version int, dirty bool) error {
	_, err := d.conn.Exec(d.ctx, "SET LOCAL lock_timeout = "+quoteLiteral(d.lockTimeout)+";\n"+versionRecord(d.table, version, dirty))
	if err != nil {
		what := fmt.Sprintf("version %d", version)
		if version < 0 {
			what = "no version"
		}
		if dirty {
			what += " as dirty, before its file,"
		}
		return fmt.Errorf("migrations: record %s in %s: %w", what, d.table, err)
	}
	return nil
}

// Version reads the version table as golang-migrate expects: -1 for none.
func (d *connDriver) Version() (int, bool, error) {
	st, err := readVersion(d.ctx, d.conn, d.table, d.lockTimeout)
	if err != nil {
		return 0, false, err
	}
	return int(st.version), st.dirty, nil
}

// Drop is golang-migrate's "drop everything in the database", which
// meterbase never asks of a host's database.
func (d *connDriver) Drop() error {
	return errors.New("migrations: dropping the database is not supported")
}

// versionRecord is the SQL that leaves the version table as golang-migrate
// leaves it: one row (version, dirty), or none for "no version" (-1) when
// clean. DELETE and INSERT take row locks, which readers of the table do
// not block, unlike TRUNCATE; SHARE ROW EXCLUSIVE, which lets readers
// through too, keeps two writers from each deleting what the other has not
// yet committed and inserting a second row.
func versionRecord(table string, version int, dirty bool) string {
	var b strings.Builder
	b.WriteString("LOCK TABLE " + table + " IN SHARE ROW EXCLUSIVE MODE;\n")
	b.WriteString("DELETE FROM " + table + ";\n")
	if version >= 0 || dirty {
		fmt.Fprintf(&b, "INSERT INTO %s (version, dirty) VALUES (%d, %t);\n", table, version, dirty)
	}
	return b.String()
}

// createVersionTable is golang-migrate's version table.
func createVersionTable(table string) string {
	return "CREATE TABLE IF NOT EXISTS " + table + " (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)"
}

// versionState is what the version table says.
type versionState struct {
	exists  bool  // the table exists
	version int64 // -1 (database.NilVersion) when it holds no row
	dirty   bool
}

// readVersion reads the version table in one round trip, bounded by
// lockTimeout: a session holding the table in ACCESS EXCLUSIVE mode makes
// it fail rather than wait.
func readVersion(ctx context.Context, conn *pgx.Conn, table, lockTimeout string) (versionState, error) {
	st := versionState{version: int64(database.NilVersion)}
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&st.exists); err != nil {
		return st, fmt.Errorf("migrations: look up version table: %w", err)
	}
	if !st.exists {
		return st, nil
	}
	results, err := conn.PgConn().Exec(ctx, "SET LOCAL lock_timeout = "+quoteLiteral(lockTimeout)+";\nSELECT version, dirty FROM "+table+" LIMIT 1").ReadAll()
	if err == nil && len(results) != 2 {
		err = fmt.Errorf("%d results", len(results))
	}
	if err != nil {
		return st, fmt.Errorf("migrations: read version table: %w", err)
	}
	if rows := results[1].Rows; len(rows) > 0 {
		if st.version, err = strconv.ParseInt(string(rows[0][0]), 10, 64); err != nil {
			return st, fmt.Errorf("migrations: read version table: %w", err)
		}
		st.dirty = string(rows[0][1]) == "t"
	}
	return st, nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
