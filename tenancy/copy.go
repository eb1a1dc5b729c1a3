package tenancy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

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
	kinds   []kind   // each column's binary encoding, for StageRows
	prepare string   // creates the stage if need be, and empties it
	copySQL string   // COPY ... FROM STDIN (FORMAT binary), for CopyInRows
}

// StageColumn is a column of a Stage: a name and a Postgres type.
type StageColumn struct {
	Name string
	Type string // text, int8, uuid, timestamptz, jsonb, bytea[]...
}

// stageType is a plain type name: words, an optional precision and array
// brackets; nothing that could end the CREATE TABLE it goes into.
var stageType = regexp.MustCompile(`^[a-z][a-z0-9_]*( [a-z][a-z0-9_]*)*(\([0-9]{1,4}(,[0-9]{1,4})?\))?(\[\])?$`)

// stageSignatures holds the columns of every stage defined, by name.
var (
	stagesMu        sync.Mutex
	stageSignatures = map[string]string{}
)

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
		st.kinds = append(st.kinds, kinds[c.Type])
		defs[i] = c.Name + " " + c.Type
	}
	// One name, one table per connection: a second stage of the name with
	// other columns would have its rows, encoded by its own column types,
	// copied into the first one's table and read as another type.
	signature := strings.Join(defs, ", ")
	stagesMu.Lock()
	prev, defined := stageSignatures[name]
	if !defined {
		stageSignatures[name] = signature
	}
	stagesMu.Unlock()
	if defined && prev != signature {
		panic(fmt.Sprintf("tenancy: stage %s defined twice, with other columns (%s, then %s)", name, prev, signature))
	}
	st.copySQL = "COPY " + st.table + " (" + strings.Join(st.columns, ", ") + ") FROM STDIN (FORMAT binary)"
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
	if err := t.checkCopyIn(s, rows != nil, fn); err != nil {
		return err
	}
	return t.copyIn(ctx, s, fn, func(tx *Tenant) (int64, error) {
		return tx.db.CopyFrom(ctx, s.identifier(), s.columns, rows)
	})
}

// CopyInRows is CopyIn of rows encoded beforehand (see StageRows), which
// are sent as they are.
func (t *Tenant) CopyInRows(ctx context.Context, s Stage, rows *StageRows, fn func(tx *Tenant, copied int64) error) error {
	if err := t.checkCopyIn(s, rows != nil, fn); err != nil {
		return err
	}
	if err := rows.complete(s); err != nil {
		return err
	}
	return t.copyIn(ctx, s, fn, func(tx *Tenant) (int64, error) {
		ptx, ok := tx.db.(pgx.Tx)
		if !ok {
			return 0, fmt.Errorf("tenancy: copy into stage %s: not in a transaction", s.name)
		}
		conn := ptx.Conn()
		// As pgx's CopyFrom would, the connection's tracer is told.
		tracer, _ := conn.Config().Tracer.(pgx.CopyFromTracer)
		if tracer != nil {
			ctx = tracer.TraceCopyFromStart(ctx, conn, pgx.TraceCopyFromStartData{TableName: s.identifier(), ColumnNames: s.columns})
		}
		tag, err := conn.PgConn().CopyFrom(ctx, io.MultiReader(bytes.NewReader(rows.buf), bytes.NewReader(copyTrailer)), s.copySQL)
		if tracer != nil {
			tracer.TraceCopyFromEnd(ctx, conn, pgx.TraceCopyFromEndData{CommandTag: tag, Err: err})
		}
		return tag.RowsAffected(), err
	})
}

func (s Stage) identifier() pgx.Identifier {
	return pgx.Identifier{"pg_temp", "meterbase_stage_" + s.name}
}

// checkCopyIn refuses a copy that cannot start, before any SQL.
func (t *Tenant) checkCopyIn(s Stage, haveRows bool, fn func(tx *Tenant, copied int64) error) error {
	if err := t.usable(); err != nil {
		return err
	}
	if s.prepare == "" {
		return &InvalidInputError{Field: "stage", Reason: "is zero; make it with DefineStage"}
	}
	if !haveRows || fn == nil {
		return &InvalidInputError{Field: "copy in", Reason: "needs rows and a function to run"}
	}
	return nil
}

// copyIn prepares the stage in a transaction of the tenant, copies the
// rows into it with copy, and runs fn.
func (t *Tenant) copyIn(ctx context.Context, s Stage, fn func(tx *Tenant, copied int64) error, copy func(tx *Tenant) (int64, error)) error {
	return t.InTx(ctx, func(tx *Tenant) error {
		if _, err := tx.db.Exec(ctx, s.prepare); err != nil {
			return fmt.Errorf("tenancy: prepare stage %s: %w", s.name, mapError(err))
		}
		n, err := copy(tx)
		if err != nil {
			return fmt.Errorf("tenancy: copy into stage %s: %w", s.name, mapError(err))
		}
		return fn(tx, n)
	})
}

// kind is how StageRows encodes a column's values: by the column's type.
type kind uint8

const (
	kindOther kind = iota // NULLs only
	kindInt4
	kindInt8
	kindText
	kindUUID
	kindBytea
	kindJSONB
	kindTimestamptz
)

var kinds = map[string]kind{
	"int4": kindInt4, "integer": kindInt4, "int": kindInt4,
	"int8": kindInt8, "bigint": kindInt8,
	"text": kindText, "uuid": kindUUID, "bytea": kindBytea, "jsonb": kindJSONB,
	"timestamptz": kindTimestamptz, "timestamp with time zone": kindTimestamptz,
}

var kindNames = [...]string{"a NULL", "an int4", "an int8", "a text", "a uuid", "a bytea", "a jsonb", "a timestamptz"}

// The binary COPY stream's header (signature, flags, no extension) and
// trailer.
var (
	copyHeader  = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	copyTrailer = []byte{0xff, 0xff}
)

// postgresEpoch is where timestamptz's binary microseconds count from.
var postgresEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()

// StageRows are rows for one Stage, encoded as they are added, in the
// binary format of COPY, for CopyInRows to send as they are: faster than
// CopyIn's pgx.CopyFromSource, which has pgx find how to encode every
// value, and ask the server for the columns' types first.
//
// Each method adds the next column's value, and must match the type the
// stage gave that column (Int8 for int8 or bigint, Text for text...); Null
// suits any. A row ends with its last column. A value of another type, or
// a row left unfinished, fails CopyInRows before any SQL. Text must be
// valid UTF-8 without NUL bytes, and JSONB a JSON value, or the server
// refuses the copy.
type StageRows struct {
	stage string
	kinds []kind
	buf   []byte
	col   int
	rows  int64
	err   error
}

// NewRows starts rows for the stage; size is a guess of their bytes.
func (s Stage) NewRows(size int) *StageRows {
	buf := make([]byte, 0, max(size, 0)+len(copyHeader))
	return &StageRows{stage: s.name, kinds: s.kinds, buf: append(buf, copyHeader...)}
}

// Len returns how many rows were added.
func (r *StageRows) Len() int64 { return r.rows }

// field starts the next column's value, of kind k, of n bytes (-1: NULL).
func (r *StageRows) field(k kind, n int) bool {
	if r.err != nil {
		return false
	}
	if r.col >= len(r.kinds) {
		r.err = &InvalidInputError{Field: "stage rows", Reason: "the stage " + r.stage + " has no columns"}
		return false
	}
	if k != kindOther && r.kinds[r.col] != k {
		r.err = &InvalidInputError{Field: "stage rows", Reason: fmt.Sprintf("column %d of stage %s is not %s", r.col+1, r.stage, kindNames[k])}
		return false
	}
	if n > maxFieldBytes {
		r.err = &InvalidInputError{Field: "stage rows", Reason: fmt.Sprintf("column %d of stage %s: a value of %d bytes is above Postgres's limit of %d", r.col+1, r.stage, n, maxFieldBytes)}
		return false
	}
	if r.col == 0 {
		r.buf = binary.BigEndian.AppendUint16(r.buf, uint16(len(r.kinds)))
	}
	r.buf = binary.BigEndian.AppendUint32(r.buf, uint32(int32(n)))
	if r.col++; r.col == len(r.kinds) {
		r.col = 0
		r.rows++
	}
	return true
}

// Null adds a NULL.
func (r *StageRows) Null() { r.field(kindOther, -1) }

// Int4 adds an int4.
func (r *StageRows) Int4(v int32) {
	if r.field(kindInt4, 4) {
		r.buf = binary.BigEndian.AppendUint32(r.buf, uint32(v))
	}
}

// Int8 adds an int8.
func (r *StageRows) Int8(v int64) {
	if r.field(kindInt8, 8) {
		r.buf = binary.BigEndian.AppendUint64(r.buf, uint64(v))
	}
}

// Text adds a text.
func (r *StageRows) Text(v string) {
	if r.field(kindText, len(v)) {
		r.buf = append(r.buf, v...)
	}
}

// UUID adds a uuid.
func (r *StageRows) UUID(v [16]byte) {
	if r.field(kindUUID, 16) {
		r.buf = append(r.buf, v[:]...)
	}
}

// Bytea adds a bytea (nil is the empty one; Null adds NULL).
func (r *StageRows) Bytea(v []byte) {
	if r.field(kindBytea, len(v)) {
		r.buf = append(r.buf, v...)
	}
}

// JSONB adds a jsonb, given as JSON text.
func (r *StageRows) JSONB(v string) {
	if r.field(kindJSONB, 1+len(v)) {
		r.buf = append(append(r.buf, 1), v...) // jsonb's binary format version, then the text
	}
}

// Timestamptz adds a timestamptz, to the microsecond (rounded down).
func (r *StageRows) Timestamptz(v time.Time) {
	if r.err == nil && (v.Before(minTimestamptz) || !v.Before(maxTimestamptz)) {
		// Checked on the time itself: its microseconds would wrap around
		// int64 into a valid, wrong instant.
		r.err = &InvalidInputError{Field: "stage rows", Reason: fmt.Sprintf("column %d of stage %s: %s is outside Postgres's timestamptz range", r.col+1, r.stage, v.UTC().Format(time.RFC3339))}
		return
	}
	if r.field(kindTimestamptz, 8) {
		r.buf = binary.BigEndian.AppendUint64(r.buf, uint64(v.Truncate(time.Microsecond).UnixMicro()-postgresEpoch))
	}
}

// Postgres's limits: a field's bytes, and timestamptz's range (4713 BC to
// 294276 AD).
const maxFieldBytes = 1 << 30

var (
	minTimestamptz = time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC)
	maxTimestamptz = time.Date(294277, 1, 1, 0, 0, 0, 0, time.UTC)
)

// complete reports rows that are not whole rows of s.
func (r *StageRows) complete(s Stage) error {
	switch {
	case r.err != nil:
		return r.err
	case r.stage != s.name:
		return &InvalidInputError{Field: "stage rows", Reason: "were made for stage " + r.stage + ", not " + s.name}
	case r.col != 0:
		return &InvalidInputError{Field: "stage rows", Reason: fmt.Sprintf("the last row has %d of %d columns", r.col, len(r.kinds))}
	}
	return nil
}
