package usage_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// libraryCall is one call of the usage package made as a tenant.
type libraryCall func(ctx context.Context, tn *tenancy.Tenant) (any, error)

// Every call of the usage package, made as tenant A in a host's
// transaction, neither reads nor writes a row of B or C, whose histories
// are the same as A's (same keys, users, times and amounts): as the owner
// with row-level security bypassed, and as the application role (see
// pgtest.CheckIsolation). Every prepared statement of the package runs in
// at least one of these calls.
func TestEveryLibraryCallIsIsolated(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	base := time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)
	var batch []usage.RecordParams
	for i := range 40 {
		batch = append(batch, usage.RecordParams{
			User: []tenancy.UserID{w.shared, w.owners[0]}[i%2], OperationType: []usage.OperationType{usage.ChatCompletion, usage.Embedding}[i%2],
			FeatureKey: "chat", Model: "m", Quantity: int64(i + 1), Credits: int64(i), IdempotencyKey: fmt.Sprint("k", i),
			OccurredAt: base.Add(time.Duration(i) * 37 * time.Minute),
		})
	}
	var firstA usage.EventID
	for i := range w.ws {
		tn := w.tenant(t, w.db.Pool, i)
		res, err := s.RecordBatch(ctx, tn, batch)
		require.NoError(t, err)
		require.Equal(t, len(batch), res.Inserted)
		list, err := s.List(ctx, tn, usage.ListParams{Order: usage.OldestFirst, Page: tenancy.Page{Limit: 2}})
		require.NoError(t, err)
		q := int64(1000)
		_, err = s.Correct(ctx, tn, usage.CorrectParams{Event: list.Items[1].ID, Quantity: &q, Reason: "fix", IdempotencyKey: "fix-1"})
		require.NoError(t, err)
		if i == 0 {
			firstA = list.Items[0].ID
		} else {
			_, err = s.DeleteBefore(ctx, tn, usage.DeleteBeforeParams{Before: base.Add(time.Hour)})
			require.NoError(t, err)
		}
	}
	// A cursor of A's, handed out before the run.
	page, err := s.List(ctx, w.tenant(t, w.db.Pool, 0), usage.ListParams{Page: tenancy.Page{Limit: 5}})
	require.NoError(t, err)
	require.NotEmpty(t, page.Next)

	ev := func(key string, q int64) usage.RecordParams {
		return usage.RecordParams{User: w.shared, OperationType: usage.ChatCompletion, Quantity: q, IdempotencyKey: key, OccurredAt: base.Add(90 * time.Minute)}
	}
	unnest := newService(t, nil)
	usage.ViaUnnest(unnest)
	// Results are compared between two runs: keep what does not depend on
	// the ids each run makes.
	recorded := func(r usage.RecordResult, err error) (any, error) {
		return []any{r.Replay, r.Event.Quantity, r.Event.Unit, r.Event.OccurredAt}, err
	}
	adjusted := func(r usage.AdjustResult, err error) (any, error) {
		return []any{r.Replay, r.Adjustment.EventVersion, r.Adjustment.Kind, r.Adjustment.QuantityBefore, r.Adjustment.QuantityAfter}, err
	}
	var mu sync.Mutex
	ran := map[string]bool{}
	// A statement run directly counts as run, as the package's own do.
	stmt := func(name string) *tenancy.Statement {
		mu.Lock()
		defer mu.Unlock()
		ran[name] = true
		return usage.Statements()[name]
	}
	rows := func(r pgx.Rows, err error) (any, error) {
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(r, pgx.RowToMap)
	}
	calls := map[string]libraryCall{
		"Record": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return recorded(s.Record(ctx, tn, ev("new", 7)))
		},
		"Record replay": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return recorded(s.Record(ctx, tn, batch[3]))
		},
		"Record conflict": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return recorded(s.Record(ctx, tn, ev("k3", 99)))
		},
		"Record before horizon of B": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			p := ev("early", 1)
			p.OccurredAt = base.Add(time.Minute)
			return recorded(s.Record(ctx, tn, p))
		},
		"RecordBatch": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return s.RecordBatch(ctx, tn, append(slices.Clone(batch[:5]), ev("new", 1), ev("k4", 12), ev("new2", 2)))
		},
		"RecordBatch with arrays": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return unnest.RecordBatch(ctx, tn, append(slices.Clone(batch[:5]), ev("new", 1), ev("k4", 12), ev("new2", 2)))
		},
		"List": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return s.List(ctx, tn, usage.ListParams{Page: tenancy.Page{Limit: 7, WithTotal: true}})
		},
		"List filtered, a cursor's page": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return s.List(ctx, tn, usage.ListParams{Page: tenancy.Page{Limit: 5, Cursor: page.Next}})
		},
		"List by user and type, offset": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return s.List(ctx, tn, usage.ListParams{Users: []tenancy.UserID{w.shared}, OperationTypes: []usage.OperationType{usage.ChatCompletion},
				FeatureKeys: []string{"chat"}, Models: []string{"m"}, Status: usage.Succeeded, From: base, To: base.Add(20 * time.Hour),
				Columns: []usage.Column{usage.ColQuantity}, Order: usage.OldestFirst, Page: tenancy.Page{Limit: 3, Offset: 2, WithTotal: true}})
		},
		"Get": func(ctx context.Context, tn *tenancy.Tenant) (any, error) { return s.Get(ctx, tn, firstA) },
		"Summarize": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return s.Summarize(ctx, tn, usage.SummaryParams{From: base, To: base.Add(48 * time.Hour)})
		},
		"Summarize by user, daily in Kathmandu, with raw edges": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return s.Summarize(ctx, tn, usage.SummaryParams{From: base.Add(7 * time.Minute), To: base.Add(30 * time.Hour), Window: usage.Daily,
				TimeZone: "Asia/Kathmandu", By: usage.ByUser})
		},
		"UserTotals": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return s.UserTotals(ctx, tn, usage.UserTotalsParams{Users: []tenancy.UserID{w.shared, w.owners[1]}, From: base, To: base.Add(48 * time.Hour)})
		},
		"Void": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return adjusted(s.Void(ctx, tn, usage.VoidParams{Event: firstA, Reason: "test", IdempotencyKey: "void-1"}))
		},
		"Correct replay": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			q := int64(1000)
			list, err := s.List(ctx, tn, usage.ListParams{Order: usage.OldestFirst, Page: tenancy.Page{Limit: 2}})
			if err != nil {
				return nil, err
			}
			return adjusted(s.Correct(ctx, tn, usage.CorrectParams{Event: list.Items[1].ID, Quantity: &q, Reason: "fix", IdempotencyKey: "fix-1"}))
		},
		"Void of B's event": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			other, err := s.List(ctx, w.tenant(t, w.db.Pool, 1), usage.ListParams{Page: tenancy.Page{Limit: 1}})
			if err != nil {
				return nil, err
			}
			return adjusted(s.Void(ctx, tn, usage.VoidParams{Event: other.Items[0].ID, Reason: "not mine"}))
		},
		"ListAdjustments": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			l, err := s.ListAdjustments(ctx, tn, usage.ListAdjustmentsParams{Page: tenancy.Page{WithTotal: true}})
			return []any{len(l.Items), l.Total}, err
		},
		"DeleteBefore": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return s.DeleteBefore(ctx, tn, usage.DeleteBeforeParams{Before: base.Add(3 * time.Hour), BatchSize: 2})
		},
		"statement event_by_key": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return rows(tn.Query(ctx, stmt("event_by_key"), tenancy.Args{"idempotency_key": "k3"}))
		},
		"statement adjustment_by_key": func(ctx context.Context, tn *tenancy.Tenant) (any, error) {
			return rows(tn.Query(ctx, stmt("adjustment_by_key"), tenancy.Args{"idempotency_key": "fix-1"}))
		},
	}
	// The Recorder, given the host's transaction as its connection.
	recorderCall := func(ctx context.Context, tx pgx.Tx, ws tenancy.WorkspaceID) (any, error) {
		r, err := s.NewRecorder(tx, &usage.RecorderConfig{FlushInterval: time.Hour})
		if err != nil {
			return nil, err
		}
		for _, p := range []usage.RecordParams{ev("rec-1", 1), batch[5], ev("rec-2", 2)} {
			if err := r.Record(ctx, ws, p); err != nil {
				return nil, err
			}
		}
		err = r.Close(ctx)
		return r.Stats(), err
	}

	// Statements count when they run in this test's calls: other tests
	// run at the same time.
	type marker struct{}
	stop := usage.OnStatement(func(ctx context.Context, name string) {
		if ctx.Value(marker{}) == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		ran[name] = true
	})
	defer stop()
	mine, others := w.ws[0].UUID(), []uuid.UUID{w.ws[1].UUID(), w.ws[2].UUID()}
	names := make([]string, 0, len(calls))
	for name := range calls {
		names = append(names, name)
	}
	sort.Strings(names)
	// The calls must do their work, not fail alike in every run (which
	// would prove nothing): only these fail, and as they should.
	wantErr := map[string]error{"Record conflict": usage.ErrIdempotencyConflict, "Void of B's event": tenancy.ErrNotFound}
	for _, name := range names {
		call := calls[name]
		t.Run(name, func(t *testing.T) {
			runs := 0
			w.db.CheckIsolation(t, mine, others, func(ctx context.Context, tx pgx.Tx) (any, error) {
				runs++
				got, err := call(context.WithValue(ctx, marker{}, true), tenantOf(t, tx, w.ws[0]))
				if want := wantErr[name]; want != nil {
					require.ErrorIs(t, err, want)
				} else {
					require.NoError(t, err)
				}
				return got, err
			})
			require.Equal(t, 2*len(w.db.IsolationRoles(t)), runs, "two runs in each role")
		})
	}
	t.Run("Recorder", func(t *testing.T) {
		w.db.CheckIsolation(t, mine, others, func(ctx context.Context, tx pgx.Tx) (any, error) {
			stats, err := recorderCall(context.WithValue(ctx, marker{}, true), tx, w.ws[0])
			require.NoError(t, err)
			require.Equal(t, usage.RecorderStats{Written: 2, Duplicates: 1, Flushes: 1}, stats)
			return stats, err
		})
	})
	mu.Lock()
	defer mu.Unlock()
	for name := range usage.Statements() {
		require.True(t, ran[name], "prepared statement %s ran in no isolation case: add one", name)
	}
}
