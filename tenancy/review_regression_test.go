package tenancy_test

// Regression tests of an independent review's attacks on the tenant
// boundary, each of which once got through. Each asserts the boundary the
// README promises. Attacks run as a superuser (row-level security
// bypassed) through db.RawPool, so that the handle alone stands between the
// tenants and the tenant tracer (which would otherwise fail the test on its
// own) stays out of the way.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// attackWorld is buildWorld with an owner pool that bypasses row-level
// security and has no tracer, and tenant A's handle over it.
func attackWorld(t *testing.T) (*pgtest.DB, world, *pgxpool.Pool, *tenancy.Tenant) {
	t.Helper()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	raw := db.RawPool(t)
	return db, w, raw, tenantOf(t, raw, w.ws[0])
}

// prepareAttack prepares an attack. If Prepare refuses it (with
// ErrUnsafeSQL, asserted here), the attack is stopped and ok is false: the
// test has passed; if it accepts it, the test goes on to show that running
// it as A leaves B's and C's rows as they were.
func prepareAttack(t *testing.T, sql string) (st *tenancy.Statement, ok bool) {
	t.Helper()
	st, err := tenancy.Prepare("attack", sql)
	if err != nil {
		require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
		return nil, false
	}
	return st, true
}

// FINDING 1 (critical). The lexer reads a backslash inside quotes as plain
// text, so an E” string that escapes its quote (E'\”) ends, for
// Postgres, one quote earlier than the lexer thinks: everything after it
// that the lexer takes for a string literal is code to Postgres. A bare
// tenant table, a denied function, anything, passes Prepare.
func TestReviewPrepareEStringDesync(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, w, raw, tn := attackWorld(t)

	t.Run("reads every tenant's memberships as the owner", func(t *testing.T) {
		st, ok := prepareAttack(t, `SELECT @workspace_id::uuid AS mine, E'\'' AS q, `+
			`(SELECT count(DISTINCT workspace_id) FROM memberships) AS workspaces_seen --'`)
		if !ok {
			return
		}
		t.Logf("sent: %s", st.SQL())
		var mine any
		var q string
		var seen int
		require.NoError(t, tn.QueryRow(ctx, st, nil).Scan(&mine, &q, &seen))
		if v := db.Tracer.Violation(st.SQL()); v == "" {
			t.Errorf("the tenant tracer, which every test pool carries, passes it too")
		}
		require.Equal(t, 1, seen, "tenant A's statement read the memberships of %d workspaces", seen)
	})

	t.Run("leaves operator reach and an advisory lock on a pooled application-role connection", func(t *testing.T) {
		st, ok := prepareAttack(t, `SELECT @workspace_id::uuid, E'\'', `+
			`set_config('meterbase.operator', 'planted', false), pg_advisory_lock(4242)::text --'`)
		if !ok {
			return
		}
		app := db.AppPool(t, func(c *pgxpool.Config) { c.MaxConns = 1; c.ConnConfig.Tracer = nil })
		atn := tenantOf(t, app, w.ws[0])
		_, err := atn.Exec(ctx, st, nil)
		require.NoError(t, err)
		// The host's next raw statement on that connection, with no tenant
		// set, should see no tenant's rows under row-level security.
		var visible int
		require.NoError(t, app.QueryRow(ctx, `SELECT count(*) FROM workspaces`).Scan(&visible))
		var locks int
		require.NoError(t, raw.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242`).Scan(&locks))
		if visible != 0 {
			t.Errorf("the pooled connection now reads %d workspaces (operator policy) for whoever uses it next", visible)
		}
		if locks != 0 {
			t.Errorf("a session advisory lock (4242) outlived the call; one on the migration lock's key stops every migration")
		}
	})

	t.Run("defeats row-level security within the statement as the application role", func(t *testing.T) {
		st, ok := prepareAttack(t, `SELECT @workspace_id::uuid, E'\'', set_config('meterbase.operator', 'x', true), `+
			`(SELECT count(*) FROM workspaces) --'`)
		if !ok {
			return
		}
		app := db.AppPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = nil })
		var mine, q, op any
		var seen int
		require.NoError(t, tenantOf(t, app, w.ws[0]).QueryRow(ctx, st, nil).Scan(&mine, &q, &op, &seen))
		require.Equal(t, 1, seen, "tenant A, as the application role, counted %d workspaces", seen)
	})
}

// FINDING 2 (critical). UPDATE's SET is checked for tenant columns only
// until a FROM at the statement's depth; IS DISTINCT FROM is one, so a
// later "workspace_id = @other" in the same SET list passes, and A moves
// its own member into B, as B's owner.
func TestReviewPrepareIsDistinctFromHidesTenantColumn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, w, raw, tn := attackWorld(t)
	_, err := members.Add(ctx, tn, tenancy.AddMemberParams{User: w.outside.ID, Role: tenancy.RoleMember})
	require.NoError(t, err)
	before := rowsOf(t, raw, w.ws[1], w.ws[2])

	st, ok := prepareAttack(t, `UPDATE {memberships} SET role = CASE WHEN 1 IS DISTINCT FROM 2 THEN 'owner' END, `+
		`workspace_id = @other WHERE user_id = @u`)
	if !ok {
		return
	}
	t.Logf("sent: %s", st.SQL())
	_, err = tn.Exec(ctx, st, tenancy.Args{"other": w.ws[1], "u": w.outside.ID})
	require.NoError(t, err)
	var role string
	err = raw.QueryRow(ctx, `SELECT role FROM memberships WHERE workspace_id = $1 AND user_id = $2`, w.ws[1], w.outside.ID).Scan(&role)
	if err == nil {
		t.Errorf("tenant A made %s a %s of workspace B", w.outside.Email, role)
	}
	require.Equal(t, before, rowsOf(t, raw, w.ws[1], w.ws[2]), "B's and C's rows changed")
}

// FINDING 3 (high). The tenant filter of an UPDATE/DELETE target is
// written with the alias's text unquoted: AS "M" is filtered as
// M.workspace_id, which is m, another FROM item (tenant-filtered, so the
// filter is always true). Same with the inheritance star, after which the
// alias is not seen: UPDATE {t} * AS x ... FROM {t} filters the FROM item.
func TestReviewPrepareWriteTargetFilterNamesAnotherItem(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, sql := range []string{
		`DELETE FROM {memberships} AS "M" USING {workspaces} m WHERE "M".role <> 'owner'`,
		`UPDATE {memberships} AS "M" SET updated_at = now() + interval '1 day' FROM {workspaces} m WHERE "M".role <> 'owner'`,
		`UPDATE {memberships} * AS x SET updated_at = now() + interval '1 day' FROM {memberships} WHERE x.role <> 'owner'`,
	} {
		t.Run(sql, func(t *testing.T) {
			t.Parallel()
			_, w, raw, tn := attackWorld(t)
			before := rowsOf(t, raw, w.ws[1], w.ws[2])
			st, ok := prepareAttack(t, sql)
			if !ok {
				return
			}
			t.Logf("sent: %s", st.SQL())
			tag, err := tn.Exec(ctx, st, nil)
			require.NoError(t, err)
			require.Equal(t, before, rowsOf(t, raw, w.ws[1], w.ws[2]), "A's statement changed %d rows, B's and C's among them", tag.RowsAffected())
		})
	}
}

// FINDING 4 (high). {t} right after "delete from" is taken for a DELETE's
// target even when DELETE is a column label (SELECT x AS delete FROM {t}):
// the table is then written bare, and the filter appended at the end of
// the statement, where it filters the last branch of a UNION only.
func TestReviewPrepareDeleteLabelMakesAReadATarget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, _, _, tn := attackWorld(t)
	st, ok := prepareAttack(t, `SELECT workspace_id AS delete FROM {memberships} UNION ALL SELECT NULL FROM {memberships}`)
	if !ok {
		return
	}
	t.Logf("sent: %s", st.SQL())
	rows, err := tn.Query(ctx, st, nil)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[*tenancy.WorkspaceID])
	require.NoError(t, err)
	seen := map[tenancy.WorkspaceID]bool{}
	for _, id := range got {
		if id != nil {
			seen[*id] = true
		}
	}
	require.LessOrEqual(t, len(seen), 1, "tenant A read the memberships of %d workspaces", len(seen))
}

// FINDING 5 (medium). INSERT INTO {t} ... ON CONFLICT takes any arbiter: on
// a host table with a key unique across tenants (an API key, a slug, an
// external id), DO UPDATE updates, and RETURNING shows, another tenant's
// row. The builders lead every arbiter with the tenant columns; Prepare
// does not.
func TestReviewPrepareOnConflictGlobalKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, w, raw, tn := attackWorld(t)
	_, err := raw.Exec(ctx, `CREATE TABLE attack_api_keys (
		workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
		key text NOT NULL UNIQUE, label text NOT NULL)`)
	require.NoError(t, err)
	tenancy.DefineTable("attack_api_keys", tenancy.WorkspaceScoped)
	_, err = raw.Exec(ctx, `INSERT INTO attack_api_keys VALUES ($1, 'k-of-b', 'B''s production key')`, w.ws[1])
	require.NoError(t, err)

	st, ok := prepareAttack(t, `INSERT INTO {attack_api_keys} (key, label) VALUES (@key, 'hijacked') `+
		`ON CONFLICT (key) DO UPDATE SET label = EXCLUDED.label RETURNING workspace_id`)
	if !ok {
		return
	}
	var owner tenancy.WorkspaceID
	require.NoError(t, tn.QueryRow(ctx, st, tenancy.Args{"key": "k-of-b"}).Scan(&owner))
	var label string
	require.NoError(t, raw.QueryRow(ctx, `SELECT label FROM attack_api_keys WHERE workspace_id = $1`, w.ws[1]).Scan(&label))
	require.Equal(t, "B's production key", label, "A updated B's row (and RETURNING named B: %s)", owner)
}

// FINDING 6 (medium). System views are not tenant tables: pg_stats holds
// sampled column values of every tenant's rows (most common values,
// histogram bounds), which the owner may read. (The application role
// sees no row of pg_stats for a table under row-level security.)
func TestReviewPrepareReadsPgStats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, w, raw, tn := attackWorld(t)
	_, err := raw.Exec(ctx, `UPDATE workspaces SET name = 'Secret project of B' WHERE workspace_id = $1`, w.ws[1])
	require.NoError(t, err)
	_, err = raw.Exec(ctx, `UPDATE workspaces SET name = 'Acquisition target of C' WHERE workspace_id = $1`, w.ws[2])
	require.NoError(t, err)
	_, err = raw.Exec(ctx, `ANALYZE workspaces`) // what autovacuum does on its own
	require.NoError(t, err)
	st, ok := prepareAttack(t, `SELECT coalesce(most_common_vals::text, '') || coalesce(histogram_bounds::text, '') `+
		`FROM pg_stats WHERE tablename = 'workspaces' AND attname = 'name' AND @workspace_id::uuid IS NOT NULL`)
	if !ok {
		return
	}
	var sample string
	require.NoError(t, tn.QueryRow(ctx, st, nil).Scan(&sample))
	t.Logf("pg_stats as tenant A: %s", sample)
	require.NotContains(t, sample, "Secret project of B", "A read B's workspace name from pg_stats: %s", sample)
}

// FINDING 7 (medium). A few hundred bytes of BETWEEN SYMMETRIC, nested ten
// deep (the limits allow 64 and 16 KiB), make Postgres copy and analyse
// each operand four times per level: 4^k work during parse analysis, which
// does not check for interrupts. k=9 (319 bytes) runs ~1 s past a 100 ms
// statement_timeout; k=10 (354 bytes) took 6.3 s and 1.2 GB of backend
// memory here against a 300 ms timeout; k=12 would take minutes and
// ~20 GB.
func TestReviewBetweenSymmetricPinsBackend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	pred := "true"
	for range 9 {
		pred = "(" + pred + " BETWEEN SYMMETRIC true AND false)"
	}
	_, err := tn.Select(tenancy.WorkspacesTable, "count(*)").Where(pred).Query(ctx)
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, "refused before it reaches the server")
	_, err = tenancy.Prepare("t", `SELECT count(*) FROM {workspaces} WHERE `+pred)
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, "refused in hand-written SQL too")
}

// FINDING 8 (low). The users gate names its own memberships alias,
// meterbase_gate, and compares it with the joined users' ref: a join of
// users under that very alias makes the gate compare the membership with
// itself, true for every user of the platform.
func TestReviewUsersGateAliasShadowed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, w, _, tn := attackWorld(t)
	_, err := tn.Select(tenancy.WorkspacesTable, "meterbase_gate.email").
		Join(tenancy.UsersTable.As("meterbase_gate"), "true").Query(ctx)
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, "the library's own names are not aliases")
	// The gate has no alias of its own to shadow: a join of users under
	// the name of the gate's own table reaches A's members only.
	rows, err := tn.Select(tenancy.WorkspacesTable, "memberships.email").
		Join(tenancy.UsersTable.As("memberships"), "true").OrderBy("1").Query(ctx)
	require.NoError(t, err)
	emails, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.NotContains(t, emails, w.outside.Email, "a tenant read a user of no workspace of its own: %v", emails)
	require.Len(t, emails, 4, "A has 4 members")
}

// FINDING 9 (low). A fragment (or prepared SQL) may call setseed, which
// changes the session's random() sequence for the next user of the pooled
// connection (nextval similarly leaves lastval/currval behind).
func TestReviewSetseedOutlivesCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	one := db.Connect(t, func(c *pgxpool.Config) { c.MaxConns = 1; c.ConnConfig.Tracer = nil })
	tn := tenantOf(t, one, w.ws[0])
	_, err := tn.Select(tenancy.WorkspacesTable, "setseed(0.25)::text").Query(ctx)
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
	_, err = tenancy.Prepare("t", `SELECT setseed(0.25) FROM {workspaces}`)
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL)
}

// FINDING 10 (low, robustness). InTx compares the error it got with fn's
// using ==, which panics when fn returns an error of an uncomparable type
// (a slice of field errors, as validation packages return by value).
type fieldErrors []string

func (f fieldErrors) Error() string { return strings.Join(f, "; ") }

func TestReviewInTxUncomparableError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	tn := tenantOf(t, db.Pool, w.ws[0])
	require.NotPanics(t, func() {
		err := tn.InTx(ctx, func(*tenancy.Tenant) error { return fieldErrors{"name: required"} })
		require.Error(t, err)
	})
}

// HELD: cursors. Well-formed-checksum cursors with random bodies never
// panic, and one of A's is refused by B and by another list.
func TestReviewCursorsHold(t *testing.T) {
	t.Parallel()
	tnA := offlineTenant(t)
	scopeB, err := tenancy.NewScope(mustWorkspaceID("0190c8a0-0000-7000-8000-00000000000b"))
	require.NoError(t, err)
	tnB, err := tenancy.NewTenant(noDB{}, scopeB)
	require.NoError(t, err)
	list := func(q tenancy.PageQuery) tenancy.List[int] {
		return tenancy.Paginate(tnA, "l", q, []int{1, 2}, func(int) tenancy.Keyset {
			return tenancy.Keyset{Text: "x", Int: -1, Time: time.Unix(1, 0)}
		})
	}
	c := list(tenancy.PageQuery{Limit: 1}).Next
	require.NotEmpty(t, c)
	_, err = tenancy.Page{Cursor: c}.Query(tnB, "l")
	require.ErrorIs(t, err, tenancy.ErrInvalidCursor)
	_, err = tenancy.Page{Cursor: c}.Query(tnA, "m")
	require.ErrorIs(t, err, tenancy.ErrInvalidCursor)
	for i := range 20000 {
		body := cursorBody(tnA.Scope().Workspace(), "l", i)
		require.NotPanics(t, func() { _, _ = tenancy.Page{Cursor: body}.Query(tnA, "l") })
	}
}

// cursorBody is a cursor of ws and list, as page.go lays one out, with a
// pseudo-random fields byte and body and a correct check.
func cursorBody(ws tenancy.WorkspaceID, list string, seed int) string {
	r := rand.New(rand.NewPCG(uint64(seed), 7))
	var b []byte
	b = append(b, 1)
	id := ws.UUID()
	b = append(b, id[:]...)
	h := sha256.Sum256([]byte("meterbase.cursor.list:" + list))
	b = append(b, h[:4]...)
	b = append(b, byte(r.IntN(32)))
	for range r.IntN(48) {
		b = append(b, byte(r.IntN(256)))
	}
	if r.IntN(4) == 0 { // a text length that runs past the end
		b = append(b, 0xff, 0xff, 0xff, 0xff, 0x0f)
	}
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(append(b, sum[:8]...))
}

// FINDING (high). SELECT ... INTO is refused only when INTO does not
// follow the word INSERT, so a column labelled "insert" lets it through:
// the statement creates a temporary table, which outlives the call on the
// pooled connection and, being searched before public, stands in for any
// global table of that name (the price catalog here) for every later user
// of the connection, whichever tenant it serves.
func TestReviewPrepareSelectIntoAfterInsertLabel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewDB(t)
	w := buildWorld(t, db.Pool)
	raw := db.RawPool(t)
	_, err := raw.Exec(ctx, `INSERT INTO features (feature_key, operation_type, price_credits) VALUES ('gpt.chat', 'chat.completion', 1000)`)
	require.NoError(t, err)
	app := db.AppPool(t, func(c *pgxpool.Config) { c.MaxConns = 1; c.ConnConfig.Tracer = nil })
	st, ok := prepareAttack(t, `SELECT f.feature_key, f.operation_type, f.description, 0::bigint AS price_credits, `+
		`f.unit_quantity, f.active, f.created_at, f.updated_at, @workspace_id::uuid AS insert INTO TEMP features FROM features f`)
	if !ok {
		return
	}
	_, err = tenantOf(t, app, w.ws[0]).Exec(ctx, st, nil)
	require.NoError(t, err)
	// The next request on that connection, for any tenant, prices usage.
	var price int64
	require.NoError(t, app.QueryRow(ctx, `SELECT price_credits FROM features WHERE feature_key = 'gpt.chat'`).Scan(&price))
	require.EqualValues(t, 1000, price, "tenant A's call planted a temporary features table on the pooled connection")
}

// FINDING (low). Postgres truncates identifiers to 63 bytes; DefineTable
// allows 63-character names, and the bare-name check compares whole words,
// so the name with any suffix passes Prepare and reaches the table bare.
func TestReviewPrepareTruncatedIdentifier(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("t", 63)
	tenancy.DefineTable(name, tenancy.WorkspaceScoped)
	_, err := tenancy.Prepare("truncated", `SELECT count(*) FROM `+name+`_every_row WHERE @workspace_id::uuid IS NOT NULL`)
	require.ErrorIs(t, err, tenancy.ErrUnsafeSQL, "Postgres reads %s_every_row as %s, bare", name, name)
}
