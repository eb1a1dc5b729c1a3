package usage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// capture records the statements on the usage tables that a pool sends,
// with their arguments, and passes everything on to the tenant tracer.
type capture struct {
	next *pgtest.TenantTracer
	all  bool // every statement, not only those on the usage tables
	mu   sync.Mutex
	seen []sent
}

type sent struct {
	sql  string
	args []any
}

func (c *capture) add(sql string, args []any) {
	if !c.all && !strings.Contains(sql, "usage_events") && !strings.Contains(sql, "usage_rollups") {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, sent{sql, args})
}

func (c *capture) take() []sent {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.seen
	c.seen = nil
	return out
}

func (c *capture) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	c.add(data.SQL, data.Args)
	return c.next.TraceQueryStart(ctx, conn, data)
}

func (c *capture) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryEndData) {}

func (c *capture) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	for _, q := range data.Batch.QueuedQueries {
		c.add(q.SQL, q.Arguments)
	}
	return c.next.TraceBatchStart(ctx, conn, data)
}

func (c *capture) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *capture) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// planNode is what the tests look at in a plan.
type planNode struct {
	Type     string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Index    string     `json:"Index Name"`
	Rows     *float64   `json:"Actual Rows"`
	Plans    []planNode `json:"Plans"`
}

func (n planNode) walk(f func(planNode)) {
	f(n)
	for _, c := range n.Plans {
		c.walk(f)
	}
}

var explained atomic.Int64

// explain runs EXPLAIN (ANALYZE when analyze) of a captured statement as
// the application role in workspace ws, with plans generic or custom.
func explain(t *testing.T, raw *pgxpool.Pool, ws tenancy.WorkspaceID, st sent, generic, analyze bool) planNode {
	t.Helper()
	tx, err := raw.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	mode := "force_custom_plan"
	if generic {
		mode = "force_generic_plan"
	}
	_, err = tx.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{pgtest.AppRole()}.Sanitize())
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "SELECT set_config('meterbase.workspace_id', $1, true), set_config('plan_cache_mode', $2, true)", ws.String(), mode)
	require.NoError(t, err)
	options := "FORMAT JSON"
	if analyze {
		options += ", ANALYZE"
	}
	// A prepared statement, so that a generic plan is what it would be.
	name := fmt.Sprint("explained_", explained.Add(1))
	_, err = tx.Prepare(ctx, name, "EXPLAIN ("+options+") "+st.sql)
	require.NoError(t, err)
	defer tx.Conn().Deallocate(ctx, name) //nolint:errcheck
	var out []struct {
		Plan planNode `json:"Plan"`
	}
	var text string
	require.NoError(t, tx.QueryRow(ctx, name, st.args...).Scan(&text))
	require.NoError(t, json.Unmarshal([]byte(text), &out))
	return out[0].Plan
}

// Lists and summaries of a busy workspace among others, for the filters a
// client uses most, are served by index scans, with plans custom and
// generic alike: no sequential scan of the events or the rollups. And a
// summary whose range and windows fall on quarter hours reads no event.
func TestPlansUseIndexes(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	raw := w.db.RawPool(t)
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	year := 366 * 24 * time.Hour
	busy := w.ws[0]
	// Two months of events: each quarter hour holds several, as a busy
	// workspace's do (events spread one per quarter hour over a year would
	// make the rollups as large as the events, and the test slow).
	months := 61 * 24 * time.Hour
	mid := start.Add(20 * 24 * time.Hour)
	generateEvents(t, raw, busy, 12000, start, months, "busy", 12000)
	for i := 1; i < 3; i++ {
		generateEvents(t, raw, w.ws[i], 6000, start, months, "other", 6000)
	}
	owners := tenancy.NewWorkspaces(nil)
	for i := range 4 {
		ws, err := owners.Create(ctx, w.db.Pool, tenancy.CreateWorkspaceParams{Name: "more", Owner: w.owners[0]})
		require.NoError(t, err)
		generateEvents(t, raw, ws.ID, 6000, start.Add(time.Duration(i)*time.Hour), months, "more", 6000)
	}
	_, err := raw.Exec(ctx, "VACUUM ANALYZE usage_events, usage_rollups")
	require.NoError(t, err)
	w.db.AppPool(t) // the role EXPLAIN runs as

	cap := &capture{next: w.db.Tracer}
	pool := w.db.Connect(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = cap })
	tn := tenantOf(t, pool, busy)
	s := newService(t, nil)
	user := tenancy.UserIDFromUUID([16]byte{0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 7})
	first, err := s.List(ctx, tn, usage.ListParams{Page: tenancy.Page{Limit: 50}})
	require.NoError(t, err)
	_ = cap.take()

	lists := map[string]usage.ListParams{
		"newest first":            {Page: tenancy.Page{Limit: 50}},
		"oldest first, a cursor":  {Order: usage.OldestFirst, Page: tenancy.Page{Limit: 50}},
		"a keyset page":           {Page: tenancy.Page{Limit: 50, Cursor: first.Next}},
		"time range, total":       {From: mid, To: mid.Add(24 * time.Hour), Page: tenancy.Page{Limit: 50, WithTotal: true}},
		"user, total":             {Users: []tenancy.UserID{user}, Page: tenancy.Page{Limit: 50, WithTotal: true}},
		"user and range":          {Users: []tenancy.UserID{user}, From: mid, To: mid.Add(7 * 24 * time.Hour), Page: tenancy.Page{Limit: 50}},
		"operation types":         {OperationTypes: []usage.OperationType{usage.Rerank}, Page: tenancy.Page{Limit: 50, WithTotal: true}},
		"several operation types": {OperationTypes: []usage.OperationType{usage.Rerank, usage.Embedding}, From: mid, Page: tenancy.Page{Limit: 50}},
		"feature":                 {FeatureKeys: []string{"draw"}, Page: tenancy.Page{Limit: 50}},
		"model and status":        {Models: []string{"embed-3"}, Status: usage.Failed, Page: tenancy.Page{Limit: 50}},
		"offset page":             {Page: tenancy.Page{Limit: 50, Offset: 500}},
	}
	summaries := map[string]usage.SummaryParams{
		"a year by day, UTC":             {From: start, To: start.Add(year), Window: usage.Daily},
		"a year by day in New York":      {From: start.Add(5 * time.Hour), To: start.Add(year), Window: usage.Daily, TimeZone: "America/New_York"},
		"a year by month, by operation":  {From: start, To: start.Add(year), Window: usage.Monthly, By: usage.ByOperationType},
		"a month by hour in Kolkata":     {From: mid, To: mid.Add(30 * 24 * time.Hour), Window: usage.Hourly, TimeZone: "Asia/Kolkata"},
		"a week by user, some users":     {From: mid, To: mid.Add(7 * 24 * time.Hour), By: usage.ByUser, Values: []string{user.String()}},
		"the last day, from any instant": {From: mid.Add(1234567 * time.Microsecond), To: mid.Add(24 * time.Hour)},
		"a quarter by week, by model":    {From: mid, To: mid.Add(91 * 24 * time.Hour), Window: usage.Weekly, By: usage.ByModel},
		"a year, whole, by feature":      {From: start, To: start.Add(year), By: usage.ByFeature},
	}
	calls := map[string]func() error{}
	for name, p := range lists {
		calls["list: "+name] = func() error { _, err := s.List(ctx, tn, p); return err }
	}
	for name, p := range summaries {
		calls["summary: "+name] = func() error { _, err := s.Summarize(ctx, tn, p); return err }
	}
	calls["get"] = func() error { _, err := s.Get(ctx, tn, first.Items[3].ID); return err }

	for name, call := range calls {
		require.NoError(t, call(), name)
		statements := cap.take()
		require.NotEmpty(t, statements, name)
		for _, st := range statements {
			for _, generic := range []bool{false, true} {
				plan := explain(t, raw, busy, st, generic, !generic)
				indexed := 0
				plan.walk(func(n planNode) {
					if n.Relation == "usage_events" || n.Relation == "usage_rollups" {
						require.NotEqual(t, "Seq Scan", n.Type, "%s (generic %v): %s on %s\n%s", name, generic, n.Type, n.Relation, st.sql)
						indexed++
					}
					// Summaries on quarter hours read no event.
					if strings.HasPrefix(name, "summary: a ") && n.Relation == "usage_events" && n.Rows != nil {
						require.Zero(t, *n.Rows, "%s read events", name)
					}
				})
				require.Positive(t, indexed, fmt.Sprintf("%s: %s", name, st.sql))
			}
		}
	}
}

// A list that filters on nothing but time is served entirely by
// usage_events_time_idx, for every workspace, range and cursor, so List
// runs its pages with their generic plan: planned once per connection.
// The generic plan is the ordered scan of that index even where generic
// estimates are furthest from a workspace's rows (one busy workspace among
// hundreds of small ones): no sort, and the page's rows read, no more.
func TestTimeListsRunGenericPlans(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	raw := w.db.RawPool(t)
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	busy := w.ws[0]
	generateEvents(t, raw, busy, 30000, start, 10*24*time.Hour, "busy", 30000)
	owners := tenancy.NewWorkspaces(nil)
	for range 400 {
		ws, err := owners.Create(ctx, raw, tenancy.CreateWorkspaceParams{Name: "small", Owner: w.owners[1]})
		require.NoError(t, err)
		generateEvents(t, raw, ws.ID, 3, start, 10*24*time.Hour, "small", 3)
	}
	_, err := raw.Exec(ctx, "VACUUM ANALYZE usage_events")
	require.NoError(t, err)
	w.db.AppPool(t) // the role EXPLAIN runs as

	cap := &capture{next: w.db.Tracer}
	one := w.db.AppPool(t, func(c *pgxpool.Config) { c.MaxConns = 1; c.ConnConfig.Tracer = cap })
	tn := tenantOf(t, one, busy)
	s := newService(t, nil)
	deep, err := s.List(ctx, tn, usage.ListParams{Page: tenancy.Page{Limit: 1, Offset: 20000}})
	require.NoError(t, err)
	cursor, err := usage.CursorAfter(tn, usage.ListParams{}, deep.Items[0])
	require.NoError(t, err)
	mid := start.Add(5 * 24 * time.Hour)
	ranged := usage.ListParams{From: start.Add(time.Hour), To: mid, Page: tenancy.Page{Limit: 50}}
	first, err := s.List(ctx, tn, ranged)
	require.NoError(t, err)
	_ = cap.take()

	lists := map[string]usage.ListParams{
		"first page":          {Page: tenancy.Page{Limit: 50}},
		"a page 20,000 deep":  {Page: tenancy.Page{Limit: 50, Cursor: cursor}},
		"a range, next page":  {From: ranged.From, To: ranged.To, Page: tenancy.Page{Limit: 50, Cursor: first.Next}},
		"oldest first, voids": {Order: usage.OldestFirst, IncludeVoided: true, From: mid, Page: tenancy.Page{Limit: 50}},
	}
	for name, p := range lists {
		for range 8 {
			l, err := s.List(ctx, tn, p)
			require.NoError(t, err, name)
			require.Len(t, l.Items, 50, name)
		}
		statements := cap.take()
		require.Len(t, statements, 8, name)
		st := statements[0]
		var generic, custom int64
		require.NoError(t, one.QueryRow(ctx, `SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1`, st.sql).Scan(&generic, &custom), name)
		require.Equal(t, [2]int64{8, 0}, [2]int64{generic, custom}, "%s: generic and custom plans\n%s", name, st.sql)

		plan := explain(t, raw, busy, st, true, true)
		scans := 0
		plan.walk(func(n planNode) {
			require.NotEqual(t, "Sort", n.Type, "%s: a sort in the generic plan", name)
			if n.Relation == "usage_events" {
				scans++
				require.Contains(t, []string{"Index Scan", "Index Only Scan"}, n.Type, name)
				require.Equal(t, "usage_events_time_idx", n.Index, name)
				require.NotNil(t, n.Rows)
				require.Equal(t, 51.0, *n.Rows, "%s: rows read", name)
			}
		})
		require.Equal(t, 1, scans, name)
	}

	// A list filtered by user is planned with its values, as before.
	user := tenancy.UserIDFromUUID([16]byte{0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 7})
	for range 6 {
		_, err := s.List(ctx, tn, usage.ListParams{Users: []tenancy.UserID{user}, Page: tenancy.Page{Limit: 50}})
		require.NoError(t, err)
	}
	statements := cap.take()
	require.NotEmpty(t, statements)
	var custom int64
	require.NoError(t, one.QueryRow(ctx, `SELECT custom_plans FROM pg_prepared_statements WHERE statement = $1`, statements[0].sql).Scan(&custom))
	require.GreaterOrEqual(t, custom, int64(5), "a list by user is planned with its values")
}
