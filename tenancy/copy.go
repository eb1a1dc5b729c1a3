package tenancy

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A Stage is a temporary table that a Tenant copies rows into at COPY's
// speed, for statements of the same transaction to read: an INSERT ...
// SELECT from it into a tenant table, with ON CONFLICT, checks and joins
// that COPY cannot do, and through the handle, which fills the tenant
// columns. Postgres refuses COPY FROM into a table that row-level security
// binds, and a statement of arrays (INSERT ... SELECT FROM unnest) spends
// more in encoding and unnesting them than COPY does in parsing its
// stream; a stage is how a library writes many rows into a tenant table
// fast.
//
// The stage lives in the session's temporary schema as
// pg_temp.meterbase_stage_<name> (Stage.Table), created on first use on
// each connection and kept (ON COMMIT DELETE ROWS): it holds rows only
// within the transaction of a CopyIn, which empties it first, so no
// statement ever sees rows that another call (of this tenant or another,
// on a pooled connection) staged. It has no tenant column: its rows are
// the caller's, for this call. Statements name it qualified, as
// Stage.Table returns it, so that no tenant table is shadowed by it.
//
// The host's role needs the TEMPORARY privilege on the database (granted
// to PUBLIC by default).
type Stage struct {
	name    string
	table   string   // pg_temp.meterbase_stage_<name>
	columns []string // in COPY order
	prepare string   // creates the stage if need be, and empties it
}

// StageColumn is a column of a Stage: a name and a Postgres type.
type StageColumn struct {
	Name string
	Type string // text, int8, uuid, timestamptz, jsonb, bytea[]...
}

// stageType is a plain type name: words, an optional precision and array
// brackets; nothing that could end the CREATE TABLE it goes into.
var stageType = regexp.MustCompile(`^[a-z][a-z0-9_]*( [a-z][a-z0-9_]*)*(\([0-9]{1,4}(,[0-9]{1,4})?\))?(\[\])?$`)

// DefineStage describes a stage. Packages call it once, at init, with
// constants; an invalid name, column or type panics there.
func DefineStage(name string, columns ...StageColumn) Stage {
	if !identifierPattern.MatchString(name) || len(name) > 63-len("meterbase_stage_") {
		panic(fmt.Sprintf("tenancy: stage name %q is not a short lower-case SQL identifier", name))
	}
	if len(columns) == 0 {
		panic(fmt.Sprintf("tenancy: stage %s has no column", name))
	}
	st := Stage{name: name, table: "pg_temp.meterbase_stage_" + name}
	defs := make([]string, len(columns))
	for i, c := range columns {
		if !identifierPattern.MatchString(c.Name) || !stageType.MatchString(c.Type) {
			panic(fmt.Sprintf("tenancy: stage %s: column %q %q is not a lower-case name and a plain type", name, c.Name, c.Type))
		}
		for _, prev := range st.columns {
			if prev == c.Name {
				panic(fmt.Sprintf("tenancy: stage %s: column %s twice", name, c.Name))
			}
		}
		st.columns = append(st.columns, c.Name)
		defs[i] = c.Name + " " + c.Type
	}
	// One round trip, on the simple protocol (no arguments): the stage is
	// created the first time a connection needs it, and emptied of what a
	// host's transaction may have staged earlier (otherwise it is empty
	// already: ON COMMIT DELETE ROWS). It is granted to every role because
	// a session may change roles (SET ROLE) between calls; no other session
	// can reach a temporary table, whatever its grants.
	st.prepare = "DO $stage$ BEGIN IF to_regclass('" + st.table + "') IS NULL THEN " +
		"CREATE TEMPORARY TABLE " + st.table + " (" + strings.Join(defs, ", ") + ") ON COMMIT DELETE ROWS; " +
		"GRANT ALL ON " + st.table + " TO PUBLIC; END IF; END $stage$; DELETE FROM " + st.table
	return st
}

// Name returns the stage's name, as defined.
func (s Stage) Name() string { return s.name }

// Table returns the qualified name statements read the stage by:
// pg_temp.meterbase_stage_<name>.
func (s Stage) Table() string { return s.table }

// Columns returns the stage's columns, in the order CopyIn copies them.
func (s Stage) Columns() []string { return append([]string(nil), s.columns...) }

// CopyIn runs fn in a transaction of the tenant (as InTx does: a savepoint
// in the host's transaction) after copying rows into the stage, which then
// holds exactly those rows, in the order given; copied is their number.
// fn reads the stage through the tenant it is given, with statements that
// name it as Stage.Table returns. The stage is empty again once the
// transaction ends, committed or not. Each row gives one value per column
// of the stage, in order.
func (t *Tenant) CopyIn(ctx context.Context, s Stage, rows pgx.CopyFromSource, fn func(tx *Tenant, copied int64) error) error {
	if err := t.usable(); err != nil {
		return err
	}
	if s.prepare == "" {
		return &InvalidInputError{Field: "stage", Reason: "is zero; make it with DefineStage"}
	}
	if rows == nil || fn == nil {
		return &InvalidInputError{Field: "copy in", Reason: "needs rows and a function to run"}
	}
	return t.InTx(ctx, func(tx *Tenant) error {
		if _, err := tx.db.Exec(ctx, s.prepare); err != nil {
			return fmt.Errorf("tenancy: prepare stage %s: %w", s.name, mapError(err))
		}
		n, err := tx.db.CopyFrom(ctx, pgx.Identifier{"pg_temp", "meterbase_stage_" + s.name}, s.columns, rows)
		if err != nil {
			return fmt.Errorf("tenancy: copy into stage %s: %w", s.name, mapError(err))
		}
		return fn(tx, n)
	})
}
