package migrations_test

import (
	"context"
	"strings"
	"sync"
	"testing"
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
		require.Equal(t, migrations.Step{Version: s.Version, Name: list[i].Name, Direction: migrations.DirectionUp, From: s.Version - 1, To: s.Version, File: list[i].Up}, s)
		require.True(t, s.Transactional())
		require.Contains(t, script, "-- ==> "+s.File.Path+": version ")
		require.Contains(t, script, s.File.SQL, "the script holds every file verbatim")
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
		{Version: 2, Name: list[1].Name, Direction: migrations.DirectionDown, From: 2, To: 1, File: list[1].Down},
		{Version: 1, Name: list[0].Name, Direction: migrations.DirectionDown, From: 1, To: 0, File: list[0].Down},
	}, plan.Steps)

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
			planned = append(planned, s.File.SQL)
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
