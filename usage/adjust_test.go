package usage_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

func TestVoidAndCorrect(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	at := time.Date(2025, 5, 5, 10, 0, 0, 0, time.UTC)
	rec := func(key string, q, c int64) usage.Event {
		r, err := s.Record(ctx, a, usage.RecordParams{User: w.shared, OperationType: usage.ChatCompletion, Quantity: q, Credits: c,
			IdempotencyKey: key, OccurredAt: at})
		require.NoError(t, err)
		return r.Event
	}
	day := usage.SummaryParams{From: at.Add(-time.Hour), To: at.Add(time.Hour)}
	total := func() usage.Totals {
		sum, err := s.Summarize(ctx, a, day)
		require.NoError(t, err)
		return sum.Total
	}
	e1, e2 := rec("a", 100, 10), rec("b", 50, 5)
	require.Equal(t, usage.Totals{Events: 2, Quantity: 150, Credits: 15}, total())

	q, c := int64(120), int64(12)
	fix, err := s.Correct(ctx, a, usage.CorrectParams{Event: e1.ID, Quantity: &q, Credits: &c, Reason: "provider's report", Actor: w.owners[0], IdempotencyKey: "fix"})
	require.NoError(t, err)
	require.False(t, fix.Replay)
	require.Equal(t, 2, fix.Adjustment.EventVersion)
	adj := fix.Adjustment
	require.Equal(t, usage.KindCorrection, adj.Kind)
	require.Equal(t, []int64{100, 120, 10, 12}, []int64{adj.QuantityBefore, adj.QuantityAfter, adj.CreditsBefore, adj.CreditsAfter})
	require.Equal(t, w.owners[0], adj.Actor)
	require.Equal(t, usage.Totals{Events: 2, Quantity: 170, Credits: 17}, total())
	got, err := s.Get(ctx, a, e1.ID)
	require.NoError(t, err)
	require.Equal(t, int64(120), got.Quantity)
	require.Equal(t, 2, got.Version)

	// A retry returns the first result; the same key for another
	// correction is a conflict; neither changes anything.
	again, err := s.Correct(ctx, a, usage.CorrectParams{Event: e1.ID, Quantity: &q, Credits: &c, Reason: "provider's report", Actor: w.owners[0], IdempotencyKey: "fix"})
	require.NoError(t, err)
	require.True(t, again.Replay)
	require.Equal(t, adj, again.Adjustment)
	other := int64(1)
	_, err = s.Correct(ctx, a, usage.CorrectParams{Event: e1.ID, Quantity: &other, Reason: "provider's report", IdempotencyKey: "fix"})
	require.ErrorIs(t, err, usage.ErrIdempotencyConflict)
	require.Equal(t, usage.Totals{Events: 2, Quantity: 170, Credits: 17}, total())

	// A void takes the event out of the summaries, once.
	v, err := s.Void(ctx, a, usage.VoidParams{Event: e2.ID, Reason: "duplicate call", IdempotencyKey: "void"})
	require.NoError(t, err)
	require.Equal(t, usage.KindVoid, v.Adjustment.Kind)
	require.Equal(t, usage.Totals{Events: 1, Quantity: 120, Credits: 12}, total())
	replay, err := s.Void(ctx, a, usage.VoidParams{Event: e2.ID, Reason: "duplicate call", IdempotencyKey: "void"})
	require.NoError(t, err)
	require.True(t, replay.Replay)
	_, err = s.Void(ctx, a, usage.VoidParams{Event: e2.ID, Reason: "again"})
	require.ErrorIs(t, err, usage.ErrEventVoided)
	_, err = s.Correct(ctx, a, usage.CorrectParams{Event: e2.ID, Quantity: &q, Reason: "too late"})
	require.ErrorIs(t, err, usage.ErrEventVoided)
	require.Equal(t, usage.Totals{Events: 1, Quantity: 120, Credits: 12}, total())

	// Another workspace's event is not found, and unchanged.
	b := w.tenant(t, w.db.Pool, 1)
	_, err = s.Void(ctx, b, usage.VoidParams{Event: e1.ID, Reason: "not mine"})
	require.ErrorIs(t, err, tenancy.ErrNotFound)

	// The audit trail, newest first, and per event.
	trail, err := s.ListAdjustments(ctx, a, usage.ListAdjustmentsParams{Page: tenancy.Page{WithTotal: true}})
	require.NoError(t, err)
	require.Equal(t, int64(2), *trail.Total)
	require.Equal(t, v.Adjustment.ID, trail.Items[0].ID)
	one, err := s.ListAdjustments(ctx, a, usage.ListAdjustmentsParams{Event: e1.ID})
	require.NoError(t, err)
	require.Equal(t, []usage.Adjustment{adj}, one.Items)

	for name, err := range map[string]error{
		"nothing to correct": func() error { _, err := s.Correct(ctx, a, usage.CorrectParams{Event: e1.ID, Reason: "x"}); return err }(),
		"negative": func() error {
			n := int64(-1)
			_, err := s.Correct(ctx, a, usage.CorrectParams{Event: e1.ID, Credits: &n, Reason: "x"})
			return err
		}(),
		"no reason":  func() error { _, err := s.Void(ctx, a, usage.VoidParams{Event: e1.ID, Reason: "  "}); return err }(),
		"no event":   func() error { _, err := s.Void(ctx, a, usage.VoidParams{Reason: "x"}); return err }(),
		"NUL reason": func() error { _, err := s.Void(ctx, a, usage.VoidParams{Event: e1.ID, Reason: "a\x00"}); return err }(),
	} {
		require.ErrorIs(t, err, tenancy.ErrInvalidInput, name)
	}
}

// Concurrent corrections of one event each see the one before: the audit
// trail is a chain, and the summaries follow the last.
func TestConcurrentCorrectionsChain(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	at := time.Date(2025, 5, 5, 10, 0, 0, 0, time.UTC)
	r, err := s.Record(ctx, a, usage.RecordParams{User: w.shared, OperationType: usage.Embedding, Quantity: 0, OccurredAt: at})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			q := int64(i + 1)
			_, err := s.Correct(ctx, a, usage.CorrectParams{Event: r.Event.ID, Quantity: &q, Reason: "race"})
			require.NoError(t, err)
		})
	}
	wg.Wait()
	trail, err := s.ListAdjustments(ctx, a, usage.ListAdjustmentsParams{Event: r.Event.ID, Page: tenancy.Page{Limit: 100}})
	require.NoError(t, err)
	require.Len(t, trail.Items, 8)
	// Newest first: each adjustment's before is the next one's after.
	for i := 0; i+1 < len(trail.Items); i++ {
		require.Equal(t, trail.Items[i+1].QuantityAfter, trail.Items[i].QuantityBefore)
	}
	require.Equal(t, int64(0), trail.Items[7].QuantityBefore)
	last := trail.Items[0].QuantityAfter
	sum, err := s.Summarize(ctx, a, usage.SummaryParams{From: at, To: at.Add(time.Minute)})
	require.NoError(t, err)
	require.Equal(t, last, sum.Total.Quantity)
	ev, err := s.Get(ctx, a, r.Event.ID)
	require.NoError(t, err)
	require.Equal(t, 9, ev.Version)
}
