package migrations

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// Direction says which way a Step runs a migration.
type Direction string

const (
	DirectionUp   Direction = "up"   // the step applies the migration's up file
	DirectionDown Direction = "down" // the step applies the migration's down file
)

// Step is one migration file that a Plan would run.
type Step struct {
	Version   uint      // the migration's version (NNNN)
	Name      string    // the migration's name, e.g. "tenancy"
	Direction Direction // DirectionUp runs File = Up, DirectionDown runs File = Down
	From, To  uint      // the database's version before and after the step
	// File is the file that would run, as written (FS holds the same
	// text), and File.Header its risks (see the migrations README).
	File File
	// Record is what the migrator appends to a transactional file: the
	// statements that write the version table (To, clean) in the file's
	// own transaction, so that the file's effect and its version commit
	// together or not at all. It is empty for a file that is not a
	// transaction, whose version is recorded after it. PlanBetween, which
	// asks no database, names the default version table unqualified.
	Record string
}

// SQL is the exact text sent to Postgres for the step: File.SQL, then
// Record.
func (s Step) SQL() string { return s.File.SQL + s.Record }

// Transactional reports whether the step runs as one transaction, which
// either commits whole, with its version record, or leaves nothing behind.
// A file with CONCURRENTLY in its code does not, nor would one with a
// statement of transaction control (which the lint test refuses).
func (s Step) Transactional() bool { return isTransactional(s.File.SQL) }

// Plan is what a Migrator would do, in order, without doing it: a dry run
// for a host's DBA to review before an upgrade reaches a large, busy
// database. Its String is the SQL script that would run.
type Plan struct {
	From  uint // the database's version now
	To    uint // its version after the plan has run
	Steps []Step
}

// Plan reads the database's version and returns what Up would run. A dirty
// or newer-than-binary database is refused with the typed error Up would
// return. Plan changes nothing and takes no lock, so a run that starts later
// may find a different version.
func (m *Migrator) Plan(ctx context.Context) (*Plan, error) {
	return m.PlanTo(ctx, uint(len(m.migrations)))
}

// PlanTo returns what To(ctx, version) would run, up or down.
func (m *Migrator) PlanTo(ctx context.Context, version uint) (*Plan, error) {
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrations: acquire connection: %w", err)
	}
	defer conn.Release()
	st, err := m.status(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	if err := st.check(); err != nil {
		return nil, err
	}
	schema, err := m.resolveSchema(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	return planBetween(m.runnable(), st.Version, version, m.qualified(schema))
}

// PlanBetween returns the plan that takes a database at version from to
// version to with the migrations embedded in this binary, without asking any
// database: for reviewing an upgrade offline, from the version a production
// database reports.
func PlanBetween(from, to uint) (*Plan, error) {
	return planBetween(List(), from, to, quote(DefaultTable))
}

func planBetween(list []Migration, from, to uint, table string) (*Plan, error) {
	latest := uint(len(list))
	if from > latest || to > latest {
		return nil, fmt.Errorf("%w: cannot plan from version %d to %d; the latest is %d", ErrInvalidConfig, from, to, latest)
	}
	p := &Plan{From: from, To: to}
	for v := from + 1; v <= to; v++ {
		mig := list[v-1]
		p.Steps = append(p.Steps, Step{Version: v, Name: mig.Name, Direction: DirectionUp, From: v - 1, To: v, File: mig.Up, Record: bookkeeping(mig.Up.SQL, v, table)})
	}
	for v := from; v > to; v-- {
		mig := list[v-1]
		p.Steps = append(p.Steps, Step{Version: v, Name: mig.Name, Direction: DirectionDown, From: v, To: v - 1, File: mig.Down, Record: bookkeeping(mig.Down.SQL, v-1, table)})
	}
	return p, nil
}

// String renders the plan as a SQL script: a preamble, then every step's
// SQL exactly as it would be sent, each headed by a comment naming its file.
func (p *Plan) String() string {
	var b strings.Builder
	_, _ = p.WriteTo(&b)
	return b.String()
}

// WriteTo writes String's script to w.
func (p *Plan) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	if len(p.Steps) == 0 {
		fmt.Fprintf(&b, "-- meterbase migration plan: the database is at version %d; nothing to run.\n", p.From)
	} else {
		fmt.Fprintf(&b, "-- meterbase migration plan: version %d to %d, %d file(s).\n", p.From, p.To, len(p.Steps))
		b.WriteString(`--
-- Each file below is sent to PostgreSQL as one query string, exactly as
-- printed. A file without CREATE INDEX CONCURRENTLY runs as one implicit
-- transaction: it commits whole or not at all, and its SET LOCAL settings
-- end with it. Its last lines, from "-- meterbase:", are not in the file:
-- meterbase appends them to record the file's new version in its version
-- table in the same transaction, so that a file never commits without its
-- version, nor its version without the file. A CONCURRENTLY file commits as
-- it goes, and its version is recorded after it.
-- This is a script to read, not to run: to apply a file by hand, run that
-- file alone (psql --single-transaction --file=FILE, or plain --file for a
-- CONCURRENTLY one), then record its version.
-- Around the files, meterbase creates its version table if it is missing,
-- marks the version dirty before each file and clean after it, and drops
-- the table again when a run ends at version 0.
`)
		for _, s := range p.Steps {
			mode := "one transaction"
			if !s.Transactional() {
				mode = "not a transaction: commits as it goes"
			}
			fmt.Fprintf(&b, "\n-- ==> %s: version %d to %d (%s)\n", s.File.Path, s.From, s.To, mode)
			sql := s.SQL()
			b.WriteString(sql)
			if !strings.HasSuffix(sql, "\n") {
				b.WriteByte('\n')
			}
		}
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}
