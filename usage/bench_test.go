package usage_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// benchEvents makes n events of the kind a busy workspace records, with
// keys unique across the run.
func benchEvents(users []tenancy.UserID, n int, start time.Time, seq *int) []usage.RecordParams {
	ops := []usage.OperationType{usage.ChatCompletion, usage.Embedding, usage.ImageGeneration, usage.Rerank}
	out := make([]usage.RecordParams, n)
	for i := range out {
		*seq++
		k := *seq
		out[i] = usage.RecordParams{
			User: users[k%len(users)], OperationType: ops[k%len(ops)], FeatureKey: []string{"chat", "search", "draw"}[k%3],
			Quantity: int64(k%4000 + 1), Unit: []string{"input_tokens", "output_tokens"}[k%2], Credits: int64(k % 50),
			Price: usage.Price{Credits: 3, PerUnits: 1000}, Model: []string{"gpt-large", "gpt-small", "embed-3"}[k%3],
			Duration: time.Duration(k%3000) * time.Millisecond, Metadata: []byte(fmt.Sprintf(`{"request":"r%d"}`, k)),
			IdempotencyKey: fmt.Sprintf("bench-%d", k), OccurredAt: start.Add(time.Duration(k) * time.Second),
		}
	}
	return out
}

// copyInput is what a raw CopyFrom of events needs besides the events:
// ids and request hashes, made beforehand.
type copyInput struct {
	ws     tenancy.WorkspaceID
	events []usage.RecordParams
	ids    []pgtype.UUID
	hashes [][]byte
	now    time.Time
}

func newCopyInput(ws tenancy.WorkspaceID, events []usage.RecordParams) copyInput {
	in := copyInput{ws: ws, events: events, now: time.Now()}
	for _, p := range events {
		h := sha256.Sum256([]byte(p.IdempotencyKey))
		in.ids = append(in.ids, pgtype.UUID{Bytes: uuid.Must(uuid.NewV7()), Valid: true})
		in.hashes = append(in.hashes, h[:16])
	}
	return in
}

// rows is what the raw CopyFrom sends: every column the library writes.
func (in copyInput) rows() [][]any {
	rows := make([][]any, len(in.events))
	for i, p := range in.events {
		rows[i] = []any{in.ws, in.ids[i], p.User, string(p.OperationType), p.FeatureKey, p.Unit, p.Quantity, p.Credits,
			p.Price.Credits, p.Price.PerUnits, p.Model, string(usage.Succeeded), p.Duration.Milliseconds(), string(p.Metadata),
			p.IdempotencyKey, in.hashes[i], nil, p.OccurredAt, in.now, in.now}
	}
	return rows
}

// copyRows is newCopyInput(ws, events).rows().
func copyRows(ws tenancy.WorkspaceID, events []usage.RecordParams, _ time.Time) [][]any {
	return newCopyInput(ws, events).rows()
}

var copyColumns = []string{"workspace_id", "event_id", "user_id", "operation_type", "feature_key", "unit", "quantity", "credits",
	"price_credits", "price_unit_quantity", "model", "status", "duration_ms", "metadata", "idempotency_key", "request_hash",
	"ledger_entry_id", "occurred_at", "recorded_at", "updated_at"}

// BenchmarkIngest compares, in one run and interleaved (each iteration
// alternates which goes first), three ways to put the same kind of events
// into usage_events, triggers, indexes and all:
//
//   - batch: RecordBatch of batchSize events, through the tenant handle
//     (row-level security context, validation, request hashes,
//     deduplication and the per-event report);
//   - copy: a raw pgx CopyFrom of batchSize events into the same table, as
//     the tables' owner (row-level security would refuse it to the
//     application role), with ids and request hashes made beforehand;
//   - single: Record, one event per call (and per transaction);
//   - and arrays: RecordBatch sending the events as arrays (INSERT ...
//     SELECT FROM unnest) instead of staging them, the alternative it set
//     aside.
//
// It reports each one's events/s (median of its iterations) and the
// ratios batch/copy and batch/single.
//
//	go test -run '^$' -bench Ingest -benchtime 20x -count 6 ./usage > ingest.txt
func BenchmarkIngest(b *testing.B) {
	batchSize, singles := 5000, 100
	if v := os.Getenv("MB_BENCH_BATCH"); v != "" {
		var err error
		if batchSize, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	w := newWorld(b)
	pool := w.db.RawPool(b)
	s := newService(b, nil)
	arrays := newService(b, nil)
	usage.ViaUnnest(arrays)
	tn := tenantOf(b, pool, w.ws[0])
	users := []tenancy.UserID{w.owners[0], w.shared}
	seq := 0
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var batchRates, copyRates, arrayRates, singleRates []float64
	timed := func(n int, f func() error) float64 {
		t0 := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		return float64(n) / time.Since(t0).Seconds()
	}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		forBatch := benchEvents(users, batchSize, start, &seq)
		forArrays := benchEvents(users, batchSize, start, &seq)
		forCopy := newCopyInput(w.ws[0], benchEvents(users, batchSize, start, &seq))
		forSingle := benchEvents(users, singles, start, &seq)
		b.StartTimer()
		record := func(s *usage.Service, events []usage.RecordParams) func() error {
			return func() error {
				res, err := s.RecordBatch(ctx, tn, events)
				if err == nil && res.Inserted != batchSize {
					err = fmt.Errorf("inserted %d of %d", res.Inserted, batchSize)
				}
				return err
			}
		}
		runBatch := func() {
			batchRates = append(batchRates, timed(batchSize, record(s, forBatch)))
		}
		runCopy := func() {
			copyRates = append(copyRates, timed(batchSize, func() error {
				_, err := pool.CopyFrom(ctx, pgx.Identifier{"usage_events"}, copyColumns, pgx.CopyFromRows(forCopy.rows()))
				return err
			}))
		}
		if i%2 == 0 {
			runBatch()
			runCopy()
		} else {
			runCopy()
			runBatch()
		}
		arrayRates = append(arrayRates, timed(batchSize, record(arrays, forArrays)))
		singleRates = append(singleRates, timed(singles, func() error {
			for _, p := range forSingle {
				if _, err := s.Record(ctx, tn, p); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	batch, cp, single := median(batchRates), median(copyRates), median(singleRates)
	b.ReportMetric(median(arrayRates), "arrays-events/s")
	b.ReportMetric(batch, "batch-events/s")
	b.ReportMetric(cp, "copy-events/s")
	b.ReportMetric(single, "single-events/s")
	b.ReportMetric(batch/cp, "batch/copy")
	b.ReportMetric(batch/single, "batch/single")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkListDepth times, interleaved in one run, a page of 50 events of
// a workspace of 150,000: the first page, a keyset page 100,000 events
// deep, and the offset page at the same depth. It reports each one's
// median and the ratios to the first page.
//
// It runs twice: with the busy workspace among 2 others, and among 300
// small ones. Left to itself, Postgres plans a prepared statement anew on
// each execution until a generic plan looks no dearer than the custom
// ones: with few workspaces the first page's generic plan won and was
// kept, while the keyset page's did not, and the keyset page paid 60-120µs
// of planning on every call; with many workspaces both did. List now runs
// pages of lists that filter on time alone with their generic plan
// (tenancy's GenericPlan), so neither is planned after a connection's
// first call. The last metric is the same pages through a pool whose
// sessions force generic plans for every statement, a setting of the
// host's.
//
//	go test -run '^$' -bench ListDepth -benchtime 300x -count 3 ./usage
func BenchmarkListDepth(b *testing.B) {
	for _, others := range []int{2, 300} {
		b.Run(fmt.Sprintf("workspaces=%d", others+1), func(b *testing.B) { benchListDepth(b, others) })
	}
}

func benchListDepth(b *testing.B, others int) {
	const events, depth, limit = 150000, 100000, 50
	w := newWorld(b)
	raw := w.db.RawPool(b)
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	generateEvents(b, raw, w.ws[0], events, start, 10*24*time.Hour, "deep", 50000)
	owners := tenancy.NewWorkspaces(nil)
	for i := range others {
		ws := w.ws[1+i%2]
		if i >= 2 {
			created, err := owners.Create(ctx, raw, tenancy.CreateWorkspaceParams{Name: "other", Owner: w.owners[1]})
			if err != nil {
				b.Fatal(err)
			}
			ws = created.ID
		}
		generateEvents(b, raw, ws, max(100, 40000/others), start, 10*24*time.Hour, "other", 20000)
	}
	if _, err := raw.Exec(ctx, "VACUUM ANALYZE usage_events, usage_rollups"); err != nil {
		b.Fatal(err)
	}
	s := newService(b, nil)
	tn := tenantOf(b, raw, w.ws[0])
	at, err := s.List(ctx, tn, usage.ListParams{Page: tenancy.Page{Limit: 1, Offset: depth - 1}})
	if err != nil {
		b.Fatal(err)
	}
	cursor, err := usage.CursorAfter(tn, usage.ListParams{}, at.Items[0])
	if err != nil {
		b.Fatal(err)
	}
	pages := map[string]tenancy.Page{
		"first":  {Limit: limit},
		"keyset": {Limit: limit, Cursor: cursor},
		"offset": {Limit: limit, Offset: depth},
	}
	// The keyset and offset pages at the same depth are the same events.
	k, err := s.List(ctx, tn, usage.ListParams{Page: pages["keyset"]})
	if err != nil {
		b.Fatal(err)
	}
	o, err := s.List(ctx, tn, usage.ListParams{Page: pages["offset"]})
	if err != nil {
		b.Fatal(err)
	}
	if k.Items[0].ID != o.Items[0].ID || k.Items[limit-1].ID != o.Items[limit-1].ID {
		b.Fatal("the keyset and offset pages differ")
	}
	// The same pages through a pool whose sessions always use generic
	// plans, a setting of the host's.
	generic := tenantOf(b, w.db.Connect(b, func(c *pgxpool.Config) {
		c.ConnConfig.Tracer = nil
		c.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	}), w.ws[0])
	times := map[string][]float64{}
	order := []string{"first", "keyset", "offset", "generic first", "generic keyset"}
	for i := 0; b.Loop(); i++ {
		for j := range order {
			name := order[(i+j)%len(order)]
			via := tn
			if strings.HasPrefix(name, "generic ") {
				via = generic
			}
			t0 := time.Now()
			l, err := s.List(ctx, via, usage.ListParams{Page: pages[strings.TrimPrefix(name, "generic ")]})
			if err != nil || len(l.Items) != limit {
				b.Fatal(name, err)
			}
			times[name] = append(times[name], float64(time.Since(t0).Microseconds()))
		}
	}
	first, keyset, offset := median(times["first"]), median(times["keyset"]), median(times["offset"])
	b.ReportMetric(first, "first-µs")
	b.ReportMetric(keyset, "keyset-µs")
	b.ReportMetric(offset, "offset-µs")
	b.ReportMetric(keyset/first, "keyset/first")
	b.ReportMetric(offset/first, "offset/first")
	b.ReportMetric(median(times["generic keyset"])/median(times["generic first"]), "generic-keyset/first")
}

// BenchmarkSummaryYear times, interleaved in one run, a one-year daily
// summary of a workspace of 10 million events (MB_BENCH_EVENTS changes
// the number), generated in SQL among two smaller workspaces: through
// Summarize, from the rollups, and as the raw GROUP BY over the events
// that it equals (the first iteration checks that it does), in UTC and in
// New York (whose days are read from hour rollups). It reports the
// medians and the ratios raw/summary. Generating the events takes minutes.
//
//	go test -run '^$' -bench SummaryYear -benchtime 5x -count 1 -timeout 60m ./usage
func BenchmarkSummaryYear(b *testing.B) {
	n := 10_000_000
	if v := os.Getenv("MB_BENCH_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	w := newWorld(b)
	raw := w.db.RawPool(b)
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	year := 366 * 24 * time.Hour
	t0 := time.Now()
	generateEvents(b, raw, w.ws[0], n, start, year, "year", 500000)
	for i := 1; i < 3; i++ {
		generateEvents(b, raw, w.ws[i], n/50, start, year, "other", 500000)
	}
	if _, err := raw.Exec(ctx, "VACUUM ANALYZE usage_events, usage_rollups"); err != nil {
		b.Fatal(err)
	}
	var rollups int64
	if err := raw.QueryRow(ctx, `SELECT count(*) FROM usage_rollups WHERE workspace_id = $1`, w.ws[0]).Scan(&rollups); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d events generated in %s; %d rollup rows", n, time.Since(t0).Round(time.Second), rollups)

	s := newService(b, nil)
	tn := tenantOf(b, raw, w.ws[0])
	zones := []string{"UTC", "America/New_York"}
	times := map[string][]float64{}
	for i := 0; b.Loop(); i++ {
		for _, zone := range zones {
			p := usage.SummaryParams{From: start, To: start.Add(year), Window: usage.Daily, TimeZone: zone}
			if zone != "UTC" {
				// New York's days: the range starts on one.
				p.From, p.To = start.Add(5*time.Hour), start.Add(year+5*time.Hour)
			}
			t0 := time.Now()
			got, err := s.Summarize(ctx, tn, p)
			if err != nil {
				b.Fatal(err)
			}
			times["summary "+zone] = append(times["summary "+zone], float64(time.Since(t0).Microseconds())/1000)
			t0 = time.Now()
			want := rawSummary(b, raw, "usage_events", w.ws[0], p)
			times["raw "+zone] = append(times["raw "+zone], float64(time.Since(t0).Microseconds())/1000)
			if i == 0 {
				requireSameSummary(b, want, got, zone)
				if (zone == "UTC" && got.Total.Events != int64(n)) || len(got.Rows) < 365 {
					b.Fatalf("%s: %d events in %d days", zone, got.Total.Events, len(got.Rows))
				}
			}
		}
	}
	for _, zone := range zones {
		sum, rawMs := median(times["summary "+zone]), median(times["raw "+zone])
		name := strings.ReplaceAll(strings.ToLower(zone), "/", "-")
		b.ReportMetric(sum, name+"-summary-ms")
		b.ReportMetric(rawMs, name+"-raw-ms")
		b.ReportMetric(rawMs/sum, name+"-raw/summary")
	}
}
