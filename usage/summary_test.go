package usage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// rawSummary is the summary as a GROUP BY of the events in table (usage_events,
// or a test's shadow copy of them) would give it: the reference every
// summary must equal.
func rawSummary(t testingT, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, table string, ws tenancy.WorkspaceID, p usage.SummaryParams) usage.Summary {
	t.Helper()
	zone := p.TimeZone
	if zone == "" {
		zone = "UTC"
	}
	value := map[usage.Dimension]string{usage.ByNone: "''", usage.ByOperationType: "operation_type", usage.ByFeature: "feature_key",
		usage.ByUser: "user_id::text", usage.ByModel: "model", usage.ByUnit: "unit"}[p.By]
	var values []string
	if len(p.Values) > 0 {
		values = p.Values
	}
	rows, err := db.Query(context.Background(), fmt.Sprintf(`
		SELECT CASE WHEN $2 = '' THEN NULL ELSE date_trunc($2, occurred_at, $3) END, %[1]s,
		       count(*), count(*) FILTER (WHERE status = 'failed'), sum(quantity)::bigint, sum(credits)::bigint
		  FROM %[2]s
		 WHERE workspace_id = $1 AND voided_at IS NULL AND occurred_at >= $4 AND occurred_at < $5
		   AND ($6::text[] IS NULL OR %[1]s = ANY ($6))
		 GROUP BY 1, 2 ORDER BY 1, 2`, value, table), ws, string(p.Window), zone, p.From, p.To, values)
	require.NoError(t, err)
	out := usage.Summary{Rows: []usage.SummaryRow{}}
	loc, err := time.LoadLocation(zone)
	require.NoError(t, err)
	var window *time.Time
	var r usage.SummaryRow
	_, err = pgx.ForEachRow(rows, []any{&window, &r.Value, &r.Events, &r.Failed, &r.Quantity, &r.Credits}, func() error {
		r.Window = time.Time{}
		if window != nil {
			r.Window = window.In(loc)
		}
		out.Rows = append(out.Rows, r)
		out.Total.Events += r.Events
		out.Total.Failed += r.Failed
		out.Total.Quantity += r.Quantity
		out.Total.Credits += r.Credits
		return nil
	})
	require.NoError(t, err)
	return out
}

// testingT is what the assertions need: a *testing.T or a *rapid.T.
type testingT interface {
	require.TestingT
	Helper()
}

// requireSameSummary compares two summaries row by row; about names
// the summary in a failure's message.
func requireSameSummary(t testingT, want, got usage.Summary, about ...any) {
	t.Helper()
	what := fmt.Sprintln(about...)
	require.Equal(t, len(want.Rows), len(got.Rows), what)
	for i := range want.Rows {
		require.True(t, want.Rows[i].Window.Equal(got.Rows[i].Window), "row %d window %s, want %s; %s", i, got.Rows[i].Window, want.Rows[i].Window, what)
		require.Equal(t, want.Rows[i].Value, got.Rows[i].Value, "row %d; %s", i, what)
		require.Equal(t, want.Rows[i].Totals, got.Rows[i].Totals, "row %d; %s", i, what)
	}
	require.Equal(t, want.Total, got.Total, what)
}

func TestSummaries(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	raw := w.db.RawPool(t)
	base := time.Date(2024, 3, 9, 0, 0, 0, 0, time.UTC) // a DST change in New York the next day
	var batch []usage.RecordParams
	users := []tenancy.UserID{w.owners[0], w.shared}
	ops := []usage.OperationType{usage.ChatCompletion, usage.Embedding, usage.ImageGeneration}
	for i := range 3000 {
		st := usage.Succeeded
		if i%7 == 0 {
			st = usage.Failed
		}
		batch = append(batch, usage.RecordParams{
			User: users[i%2], OperationType: ops[i%3], Quantity: int64(i % 100), Credits: int64(i % 13),
			FeatureKey: []string{"", "chat", "search"}[i%3], Model: []string{"m1", "m2"}[i%2], Status: st,
			OccurredAt:     base.Add(time.Duration(i*97) * time.Minute).Add(time.Duration(i) * time.Second),
			IdempotencyKey: fmt.Sprint("k", i),
		})
	}
	res, err := s.RecordBatch(ctx, a, batch)
	require.NoError(t, err)
	require.Equal(t, 3000, res.Inserted)
	// Corrections and voids show in the summaries.
	list, err := s.List(ctx, a, usage.ListParams{Page: tenancy.Page{Limit: 10}})
	require.NoError(t, err)
	_, err = s.Void(ctx, a, usage.VoidParams{Event: list.Items[0].ID, Reason: "duplicate call"})
	require.NoError(t, err)
	q := int64(100000)
	_, err = s.Correct(ctx, a, usage.CorrectParams{Event: list.Items[1].ID, Quantity: &q, Reason: "provider report"})
	require.NoError(t, err)

	end := base.Add(3000 * 97 * time.Minute)
	// A few combinations; the property test tries many more.
	for i, zone := range []string{"", "America/New_York", "Asia/Kathmandu"} {
		for j, win := range []usage.Window{usage.WholeRange, usage.Hourly, usage.Daily, usage.Weekly, usage.Monthly} {
			for _, by := range [][]usage.Dimension{{usage.ByNone, usage.ByOperationType}, {usage.ByUser, usage.ByFeature}, {usage.ByModel, usage.ByUnit}}[(i+j)%3] {
				for _, rng := range [][2]time.Time{{base, end}, {base.Add(17*time.Minute + 3*time.Second), end.Add(-1234 * time.Second)}} {
					p := usage.SummaryParams{From: rng[0], To: rng[1], Window: win, TimeZone: zone, By: by}
					got, err := s.Summarize(ctx, a, p)
					require.NoError(t, err)
					requireSameSummary(t, rawSummary(t, raw, "usage_events", w.ws[0], p), got, zone, win, by, rng)
				}
			}
		}
	}
	p := usage.SummaryParams{From: base, To: end, By: usage.ByUser, Values: []string{w.shared.String()}}
	got, err := s.Summarize(ctx, a, p)
	require.NoError(t, err)
	require.Len(t, got.Rows, 1)
	requireSameSummary(t, rawSummary(t, raw, "usage_events", w.ws[0], p), got)
	totals, err := s.UserTotals(ctx, a, usage.UserTotalsParams{Users: []tenancy.UserID{w.owners[0], w.shared, w.owners[1]}, From: base, To: end})
	require.NoError(t, err)
	require.Equal(t, got.Rows[0].Totals, totals[w.shared])
	require.Zero(t, totals[w.owners[1]])
	require.Equal(t, got.Total.Events+totals[w.owners[0]].Events, int64(2999))
}

// Where a zone's clocks move by half an hour, or at a half-hour UTC
// instant, date_trunc can name a window by an instant of the window
// before it (in Lord Howe on 2024-10-06 the hour that starts at 02:30
// local is "02:00", 15:00 UTC, inside the 01:00 hour); where they fall
// back across midnight (Goose Bay, 2009-11-01 00:01 to 23:01 of October
// 31) a UTC hour holds two days. A summary still equals the raw GROUP
// BY, window by window.
func TestSummaryAcrossHalfHourShifts(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	raw := w.db.RawPool(t)
	shifts := map[string][]time.Time{
		"Australia/Lord_Howe": {time.Date(2024, 10, 5, 15, 30, 0, 0, time.UTC), time.Date(2025, 4, 5, 15, 0, 0, 0, time.UTC)},
		"America/St_Johns":    {time.Date(2024, 3, 10, 5, 30, 0, 0, time.UTC), time.Date(2024, 11, 3, 4, 30, 0, 0, time.UTC)},
		"America/Goose_Bay":   {time.Date(2009, 11, 1, 3, 1, 0, 0, time.UTC)},
	}
	var batch []usage.RecordParams
	for _, at := range shifts {
		for _, shift := range at {
			for m := -240; m < 240; m += 5 {
				batch = append(batch, usage.RecordParams{
					User: w.owners[0], OperationType: usage.ChatCompletion, Quantity: int64(m + 1000), Credits: 1,
					OccurredAt: shift.Add(time.Duration(m)*time.Minute + 7*time.Second), IdempotencyKey: fmt.Sprint(shift, m),
				})
			}
		}
	}
	_, err := s.RecordBatch(ctx, a, batch)
	require.NoError(t, err)
	for zone, at := range shifts {
		for _, shift := range at {
			day := shift.Truncate(24 * time.Hour)
			for _, win := range []usage.Window{usage.Hourly, usage.Daily, usage.Weekly, usage.Monthly} {
				for _, rng := range [][2]time.Time{{day.Add(-24 * time.Hour), day.Add(48 * time.Hour)}, {shift.Add(-3 * time.Hour), shift.Add(3 * time.Hour)}} {
					p := usage.SummaryParams{From: rng[0], To: rng[1], Window: win, TimeZone: zone}
					got, err := s.Summarize(ctx, a, p)
					require.NoError(t, err)
					require.NotEmpty(t, got.Rows)
					requireSameSummary(t, rawSummary(t, raw, "usage_events", w.ws[0], p), got, zone, win, rng)
				}
			}
		}
	}
}

func TestSummaryRefusals(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, p := range map[string]usage.SummaryParams{
		"no range":          {},
		"empty range":       {From: at, To: at},
		"backwards":         {From: at, To: at.Add(-time.Hour)},
		"too long":          {From: at, To: at.Add(usage.MaxSummarySpan + time.Hour)},
		"too many windows":  {From: at, To: at.Add(20 * 366 * 24 * time.Hour), Window: usage.Hourly},
		"unknown zone":      {From: at, To: at.Add(time.Hour), TimeZone: "Mars/Olympus_Mons"},
		"local zone":        {From: at, To: at.Add(time.Hour), TimeZone: "Local"},
		"bad window":        {From: at, To: at.Add(time.Hour), Window: "fortnight"},
		"bad dimension":     {From: at, To: at.Add(time.Hour), By: "colour"},
		"values without by": {From: at, To: at.Add(time.Hour), Values: []string{"x"}},
		"NUL value":         {From: at, To: at.Add(time.Hour), By: usage.ByModel, Values: []string{"\x00"}},
	} {
		_, err := s.Summarize(ctx, a, p)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput, name)
	}
	_, err := s.UserTotals(ctx, a, usage.UserTotalsParams{Users: []tenancy.UserID{{}}, From: at, To: at.Add(time.Hour)})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	var none *tenancy.Tenant
	_, err = s.Summarize(ctx, none, usage.SummaryParams{From: at, To: at.Add(time.Hour)})
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
}
