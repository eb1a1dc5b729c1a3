package usage_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// seed records n events in the workspace of tn, a minute apart from base,
// alternating users, operation types, features, models and statuses.
func seed(t testing.TB, s *usage.Service, tn *tenancy.Tenant, users []tenancy.UserID, base time.Time, n int, prefix string) {
	t.Helper()
	var batch []usage.RecordParams
	for i := range n {
		st := usage.Succeeded
		if i%5 == 4 {
			st = usage.Failed
		}
		batch = append(batch, usage.RecordParams{
			User: users[i%len(users)], OperationType: []usage.OperationType{usage.ChatCompletion, usage.Embedding, usage.Rerank}[i%3],
			FeatureKey: []string{"chat", "search"}[i%2], Model: []string{"m1", "m2", "m3", "m4"}[i%4], Status: st,
			Quantity: int64(i), Credits: int64(i % 7), IdempotencyKey: fmt.Sprintf("%s-%d", prefix, i),
			Metadata: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), OccurredAt: base.Add(time.Duration(i) * time.Minute),
		})
	}
	for len(batch) > 0 {
		chunk := batch[:min(len(batch), usage.MaxBatchSize)]
		res, err := s.RecordBatch(ctx, tn, chunk)
		require.NoError(t, err)
		require.Empty(t, res.Rejected)
		batch = batch[len(chunk):]
	}
}

func TestListFiltersAndColumns(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	base := time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)
	users := []tenancy.UserID{w.owners[0], w.shared}
	seed(t, s, a, users, base, 120, "e")
	seed(t, s, w.tenant(t, w.db.Pool, 1), users, base, 30, "e") // the same in B, which A must not see

	all, err := s.List(ctx, a, usage.ListParams{Page: tenancy.Page{Limit: 1000, WithTotal: true}})
	require.NoError(t, err)
	require.Len(t, all.Items, 120)
	require.Equal(t, int64(120), *all.Total)
	require.Empty(t, all.Next)
	for i, e := range all.Items {
		require.Equal(t, w.ws[0], e.WorkspaceID)
		if i > 0 {
			require.True(t, e.OccurredAt.Before(all.Items[i-1].OccurredAt), "newest first")
		}
	}
	require.JSONEq(t, `{"i":119}`, string(all.Items[0].Metadata))
	require.Equal(t, "e-119", all.Items[0].IdempotencyKey)

	for name, tc := range map[string]struct {
		p    usage.ListParams
		want func(i int) bool
	}{
		"user":           {usage.ListParams{Users: []tenancy.UserID{w.shared}}, func(i int) bool { return i%2 == 1 }},
		"operation type": {usage.ListParams{OperationTypes: []usage.OperationType{usage.Rerank, usage.Embedding}}, func(i int) bool { return i%3 != 0 }},
		"feature":        {usage.ListParams{FeatureKeys: []string{"search"}}, func(i int) bool { return i%2 == 1 }},
		"model":          {usage.ListParams{Models: []string{"m1", "m3"}}, func(i int) bool { return i%2 == 0 }},
		"status":         {usage.ListParams{Status: usage.Failed}, func(i int) bool { return i%5 == 4 }},
		"range":          {usage.ListParams{From: base.Add(10 * time.Minute), To: base.Add(20 * time.Minute)}, func(i int) bool { return i >= 10 && i < 20 }},
		"all together": {usage.ListParams{Users: []tenancy.UserID{w.owners[0]}, OperationTypes: []usage.OperationType{usage.ChatCompletion},
			Models: []string{"m1"}, From: base.Add(5 * time.Minute)}, func(i int) bool { return i%2 == 0 && i%3 == 0 && i%4 == 0 && i >= 5 }},
	} {
		tc.p.Page = tenancy.Page{Limit: 1000, WithTotal: true}
		tc.p.Order = usage.OldestFirst
		got, err := s.List(ctx, a, tc.p)
		require.NoError(t, err, name)
		var want []int64
		for i := range 120 {
			if tc.want(i) {
				want = append(want, int64(i))
			}
		}
		var quantities []int64
		for _, e := range got.Items {
			quantities = append(quantities, e.Quantity)
		}
		require.Equal(t, want, quantities, name)
		require.Equal(t, int64(len(want)), *got.Total, name)
	}

	// Only the columns asked for are loaded; the others stay zero and are
	// left out of the JSON.
	some, err := s.List(ctx, a, usage.ListParams{Columns: []usage.Column{usage.ColQuantity, usage.ColModel}, Page: tenancy.Page{Limit: 1}})
	require.NoError(t, err)
	e := some.Items[0]
	require.Equal(t, int64(119), e.Quantity)
	require.Equal(t, "m4", e.Model)
	require.True(t, e.UserID.IsZero())
	require.Empty(t, e.Metadata)
	require.Zero(t, e.Credits)
	js, err := json.Marshal(e)
	require.NoError(t, err)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(js, &fields))
	require.ElementsMatch(t, []string{"id", "workspaceId", "occurredAt", "quantity", "model"}, keys(fields))

	// A voided event is left out unless asked for.
	_, err = s.Void(ctx, a, usage.VoidParams{Event: all.Items[0].ID, Reason: "test"})
	require.NoError(t, err)
	after, err := s.List(ctx, a, usage.ListParams{Page: tenancy.Page{Limit: 1}})
	require.NoError(t, err)
	require.Equal(t, int64(118), after.Items[0].Quantity)
	withVoided, err := s.List(ctx, a, usage.ListParams{IncludeVoided: true, Page: tenancy.Page{Limit: 1}})
	require.NoError(t, err)
	require.NotNil(t, withVoided.Items[0].VoidedAt)

	got, err := s.Get(ctx, a, all.Items[1].ID)
	require.NoError(t, err)
	require.Equal(t, all.Items[1], got)
	_, err = s.Get(ctx, w.tenant(t, w.db.Pool, 1), all.Items[1].ID)
	require.ErrorIs(t, err, tenancy.ErrNotFound)

	for name, p := range map[string]usage.ListParams{
		"bad column":    {Columns: []usage.Column{"password"}},
		"bad status":    {Status: "pending"},
		"bad order":     {Order: "sideways"},
		"zero user":     {Users: []tenancy.UserID{{}}},
		"bad type":      {OperationTypes: []usage.OperationType{"Chat"}},
		"NUL model":     {Models: []string{"a\x00"}},
		"empty range":   {From: base, To: base},
		"many values":   {Models: make([]string, usage.MaxFilterValues+1)},
		"offset+cursor": {Page: tenancy.Page{Offset: 1, Cursor: all.Next + "x"}},
	} {
		_, err := s.List(ctx, a, p)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput, name)
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Keyset pages, walked both ways while other goroutines record events
// (late ones among them), list every event that existed before the walk
// once, and none twice; offset pages with a total agree with them.
func TestPagingWhileRecording(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	base := time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)
	users := []tenancy.UserID{w.owners[0], w.shared}
	seed(t, s, a, users, base, 300, "p")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// Some new, some late (inside the range already paged).
				at := base.Add(time.Duration(i%300)*time.Minute + 30*time.Second)
				_, err := s.Record(ctx, a, usage.RecordParams{User: w.shared, OperationType: usage.ToolCall, Quantity: 1,
					IdempotencyKey: fmt.Sprintf("live-%d-%d", g, i), OccurredAt: at})
				require.NoError(t, err)
			}
		})
	}
	for _, order := range []usage.Order{usage.NewestFirst, usage.OldestFirst} {
		seen := map[usage.EventID]bool{}
		original := 0
		page := tenancy.Page{Limit: 17}
		for pages := 0; ; pages++ {
			require.Less(t, pages, 1000)
			l, err := s.List(ctx, a, usage.ListParams{Order: order, Page: page})
			require.NoError(t, err)
			for _, e := range l.Items {
				require.False(t, seen[e.ID], "event %s listed twice", e.ID)
				seen[e.ID] = true
				if e.OperationType != usage.ToolCall {
					original++
				}
			}
			if l.Next == "" {
				break
			}
			page.Cursor = l.Next
		}
		require.Equal(t, 300, original, "every event there before the walk, once (%s)", order)
	}
	close(stop)
	wg.Wait()

	// Offset pages with a total, as an interface that jumps to page n
	// computes them.
	var total int64
	count := 0
	for offset := 0; ; offset += 100 {
		l, err := s.List(ctx, a, usage.ListParams{Page: tenancy.Page{Limit: 100, Offset: offset, WithTotal: true}})
		require.NoError(t, err)
		total = *l.Total
		count += len(l.Items)
		if offset > 0 && len(l.Items) == 100 {
			require.Equal(t, offset+100, l.NextOffset)
		}
		if len(l.Items) < 100 {
			require.Zero(t, l.NextOffset)
			break
		}
	}
	require.Equal(t, total, int64(count))
}

// A cursor serves only the list that handed it out: another workspace's,
// another order's or another filter's is refused, and so is one that was
// changed or cut; all are typed errors.
func TestCursorsAreBoundAndChecked(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a, b := w.tenant(t, w.db.Pool, 0), w.tenant(t, w.db.Pool, 1)
	base := time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)
	users := []tenancy.UserID{w.owners[0], w.shared}
	seed(t, s, a, users, base, 10, "c")
	seed(t, s, b, users, base, 10, "c")
	p := usage.ListParams{Models: []string{"m1", "m2"}, Page: tenancy.Page{Limit: 2}}
	l, err := s.List(ctx, a, p)
	require.NoError(t, err)
	cursor := l.Next
	require.NotEmpty(t, cursor)
	next := p
	next.Page.Cursor = cursor
	_, err = s.List(ctx, a, next)
	require.NoError(t, err, "the cursor serves its own list")
	// The same filter given in another order is the same list.
	reordered := next
	reordered.Models = []string{"m2", "m1"}
	_, err = s.List(ctx, a, reordered)
	require.NoError(t, err)

	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	require.NoError(t, err)
	tampered := append([]byte(nil), raw...)
	tampered[len(tampered)-12] ^= 1
	for name, tc := range map[string]struct {
		tn     *tenancy.Tenant
		change func(*usage.ListParams)
	}{
		"foreign tenant": {b, func(*usage.ListParams) {}},
		"other order":    {a, func(p *usage.ListParams) { p.Order = usage.OldestFirst }},
		"other filter":   {a, func(p *usage.ListParams) { p.Models = []string{"m1"} }},
		"voided too":     {a, func(p *usage.ListParams) { p.IncludeVoided = true }},
		"tampered":       {a, func(p *usage.ListParams) { p.Page.Cursor = base64.RawURLEncoding.EncodeToString(tampered) }},
		"truncated":      {a, func(p *usage.ListParams) { p.Page.Cursor = cursor[:len(cursor)-3] }},
		"garbage":        {a, func(p *usage.ListParams) { p.Page.Cursor = "not a cursor!" }},
	} {
		q := next
		tc.change(&q)
		_, err := s.List(ctx, tc.tn, q)
		require.ErrorIs(t, err, tenancy.ErrInvalidCursor, name)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput, name)
		var ce *tenancy.CursorError
		require.ErrorAs(t, err, &ce, name)
	}

	// The adjustments list binds its cursors too.
	for _, e := range l.Items {
		_, err := s.Void(ctx, a, usage.VoidParams{Event: e.ID, Reason: "x"})
		require.NoError(t, err)
	}
	adj, err := s.ListAdjustments(ctx, a, usage.ListAdjustmentsParams{Page: tenancy.Page{Limit: 1}})
	require.NoError(t, err)
	require.NotEmpty(t, adj.Next)
	_, err = s.ListAdjustments(ctx, b, usage.ListAdjustmentsParams{Page: tenancy.Page{Cursor: adj.Next}})
	require.ErrorIs(t, err, tenancy.ErrInvalidCursor)
	rest, err := s.ListAdjustments(ctx, a, usage.ListAdjustmentsParams{Page: tenancy.Page{Cursor: adj.Next}})
	require.NoError(t, err)
	require.Len(t, rest.Items, 1)
	require.NotEqual(t, adj.Items[0].ID, rest.Items[0].ID)
}
