package migrations_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/migrations"
)

func TestPlan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	m := newMigrator(t, db.Pool, nil)
	list := migrations.List()
	latest := uint(len(list))

	plan, err := m.Plan(ctx)
	require.NoError(t, err)
	require.Equal(t, uint(0), plan.From)
	require.Equal(t, latest, plan.To)
	require.Len(t, plan.Steps, len(list))
	script := plan.String()
	for i, s := range plan.Steps {
		require.Equal(t, list[i].Version, s.Version)
		require.Equal(t, migrations.DirectionUp, s.Direction)
		require.Equal(t, list[i].Up, s.File, "the plan carries each file with its header")
		require.Equal(t, migrations.Step{Version: s.Version, Name: list[i].Name, Direction: migrations.DirectionUp, From: s.Version - 1, To: s.Version, File: list[i].Up, Record: s.Record}, s)
		require.True(t, s.Transactional())
		require.Contains(t, script, "-- ==> "+s.File.Path+": version ")
		require.Contains(t, script, s.File.SQL, "the script holds every file verbatim")
		// The version record that follows each file names the version
		// table in the schema the run would use, and the file's version.
		require.Contains(t, s.Record, "-- meterbase: this file's transaction also records version "+strconv.Itoa(int(s.Version))+", clean.\n")
		require.Contains(t, s.Record, `DELETE FROM "public"."meterbase_schema_migrations";`)
		require.Contains(t, s.Record, `INSERT INTO "public"."meterbase_schema_migrations" (version, dirty) VALUES (`+strconv.Itoa(int(s.Version))+`, false);`)
		require.Contains(t, script, s.File.SQL+s.Record, "each file is followed by its version record")
		require.Equal(t, s.File.SQL+s.Record, s.SQL())
	}
	require.Less(t, strings.Index(script, list[0].Up.Path), strings.Index(script, list[1].Up.Path), "in order")
	var b strings.Builder
	n, err := plan.WriteTo(&b)
	require.NoError(t, err)
	require.Equal(t, script, b.String())
	require.Equal(t, int64(len(script)), n)

	// Planning changes nothing.
	st, err := m.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, uint(0), st.Version)

	_, err = m.To(ctx, 2)
	require.NoError(t, err)
	plan, err = m.Plan(ctx)
	require.NoError(t, err)
	require.Equal(t, uint(2), plan.From)
	require.Len(t, plan.Steps, len(list)-2)
	require.Equal(t, uint(3), plan.Steps[0].Version)

	plan, err = m.PlanTo(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, []migrations.Step{
		{Version: 2, Name: list[1].Name, Direction: migrations.DirectionDown, From: 2, To: 1, File: list[1].Down, Record: plan.Steps[0].Record},
		{Version: 1, Name: list[0].Name, Direction: migrations.DirectionDown, From: 1, To: 0, File: list[0].Down, Record: plan.Steps[1].Record},
	}, plan.Steps)
	require.Contains(t, plan.Steps[0].Record, "VALUES (1, false);", "the down file of 2 records version 1")
	require.Contains(t, plan.Steps[1].Record, "also empties the version table (no version)")
	require.NotContains(t, plan.Steps[1].Record, "INSERT", "below version 1 there is no version to record")

	plan, err = m.PlanTo(ctx, 2)
	require.NoError(t, err)
	require.Empty(t, plan.Steps)
	require.Equal(t, "-- meterbase migration plan: the database is at version 2; nothing to run.\n", plan.String())

	_, err = m.PlanTo(ctx, latest+1)
	require.ErrorIs(t, err, migrations.ErrInvalidConfig)

	// A dirty database is refused, as Up would refuse it.
	_, err = db.Pool.Exec(ctx, `UPDATE meterbase_schema_migrations SET dirty = true`)
	require.NoError(t, err)
	_, err = m.Plan(ctx)
	require.ErrorIs(t, err, migrations.ErrDirty)
}

func TestPlanBetween(t *testing.T) {
	t.Parallel()
	list := migrations.List()
	plan, err := migrations.PlanBetween(1, 3)
	require.NoError(t, err)
	require.Len(t, plan.Steps, 2)
	require.Equal(t, list[1].Up, plan.Steps[0].File)
	require.Equal(t, list[2].Up, plan.Steps[1].File)
	require.True(t, strings.HasPrefix(plan.String(), "-- meterbase migration plan: version 1 to 3, 2 file(s).\n"))
	// Without a database to ask, the version table is the default one,
	// wherever the search_path finds it.
	require.Contains(t, plan.Steps[1].Record, `INSERT INTO "meterbase_schema_migrations" (version, dirty) VALUES (3, false);`)

	_, err = migrations.PlanBetween(0, uint(len(list))+1)
	require.ErrorIs(t, err, migrations.ErrInvalidConfig)
}

// sqlRecorder is a pgx tracer that keeps every statement sent.
type sqlRecorder struct {
	mu  sync.Mutex
	sql []string
}

func (r *sqlRecorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sql = append(r.sql, data.SQL)
	return ctx
}

func (r *sqlRecorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// The dry run is not a description of what will run: it is the SQL that
// runs, statement text for statement text, in the same order.
func TestPlanIsWhatRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	rec := &sqlRecorder{}
	pool := db.Connect(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = rec })
	for _, lockTimeout := range []bool{false, true} {
		m := newMigrator(t, pool, nil)
		if lockTimeout {
			migrations.SetLockTimeout(m, 250*time.Millisecond)
		}
		plan, err := m.Plan(ctx)
		require.NoError(t, err)
		rec.mu.Lock()
		rec.sql = nil
		rec.mu.Unlock()
		_, err = m.Up(ctx)
		require.NoError(t, err)

		var ran []string
		for _, sql := range rec.sql {
			if strings.HasPrefix(sql, "-- changes:") {
				ran = append(ran, sql)
			}
		}
		var planned []string
		for _, s := range plan.Steps {
			planned = append(planned, s.SQL())
		}
		require.Equal(t, planned, ran)
		if lockTimeout {
			require.Contains(t, plan.String(), "SET LOCAL lock_timeout = '250ms';")
			require.NotContains(t, plan.String(), "SET LOCAL lock_timeout = '5s';")
		} else {
			require.NotContains(t, plan.String(), "SET LOCAL lock_timeout = '250ms';")
		}
		_, err = m.To(ctx, 0)
		require.NoError(t, err)
	}
}

// A file that cannot be a transaction is planned, and run, as written: a
// second statement would make it one, which CONCURRENTLY refuses.
func TestPlanOfConcurrentIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewEmptyDB(t)
	fsys := fstest.MapFS{
		"0001_a.up.sql":   {Data: []byte("CREATE TABLE a (id int);")},
		"0001_a.down.sql": {Data: []byte("DROP TABLE a;")},
		"0002_b.up.sql":   {Data: []byte("/* No timeouts: see the README. */\nCREATE INDEX CONCURRENTLY a_id_idx ON a (id);")},
		"0002_b.down.sql": {Data: []byte("DROP INDEX CONCURRENTLY IF EXISTS a_id_idx;")},
	}
	m := migrations.NewWithFS(t, db.Pool, nil, fsys)
	plan, err := m.Plan(ctx)
	require.NoError(t, err)
	require.True(t, plan.Steps[0].Transactional())
	require.Contains(t, plan.Steps[0].Record, "records version 1")
	require.False(t, plan.Steps[1].Transactional())
	require.Empty(t, plan.Steps[1].Record)
	require.Contains(t, plan.String(), "-- ==> 0002_b.up.sql: version 1 to 2 (not a transaction: commits as it goes)\n/* No timeouts: see the README. */\nCREATE INDEX CONCURRENTLY a_id_idx ON a (id);\n")

	res, err := m.Up(ctx)
	require.NoError(t, err)
	require.Equal(t, uint(2), res.To)
	res, err = m.To(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, uint(0), res.To)
}
