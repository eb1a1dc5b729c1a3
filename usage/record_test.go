package usage_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

func TestRecordAndReplay(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	at := time.Date(2025, 3, 4, 5, 6, 7, 891234567, time.UTC)
	p := usage.RecordParams{
		User: w.owners[0], OperationType: usage.ChatCompletion, FeatureKey: "chat-large", Quantity: 1200, Unit: "input_tokens",
		Credits: 36, Price: usage.Price{Credits: 3, PerUnits: 100}, Model: "gpt-x", Duration: 1500 * time.Millisecond,
		Metadata: json.RawMessage(`{ "request": "r1" }`), IdempotencyKey: "req-1", OccurredAt: at,
	}
	first, err := s.Record(ctx, a, p)
	require.NoError(t, err)
	require.False(t, first.Replay)
	e := first.Event
	require.False(t, e.ID.IsZero())
	require.Equal(t, w.ws[0], e.WorkspaceID)
	require.Equal(t, at.Truncate(time.Microsecond), e.OccurredAt)
	require.Equal(t, usage.Succeeded, e.Status)
	require.Equal(t, int64(1500), e.DurationMs)
	require.JSONEq(t, `{"request":"r1"}`, string(e.Metadata))
	require.Equal(t, 1, e.Version)

	again, err := s.Record(ctx, a, p)
	require.NoError(t, err)
	require.True(t, again.Replay)
	require.Equal(t, first.Event, again.Event)

	p.Quantity++
	_, err = s.Record(ctx, a, p)
	require.ErrorIs(t, err, usage.ErrIdempotencyConflict)
	var conflict *usage.IdempotencyConflictError
	require.ErrorAs(t, err, &conflict)
	require.Equal(t, "req-1", conflict.Key)

	// The unit defaults to the operation type's, the time to now.
	plain, err := s.Record(ctx, a, usage.RecordParams{User: w.shared, OperationType: usage.ImageGeneration, Quantity: 2})
	require.NoError(t, err)
	require.Equal(t, "images", plain.Event.Unit)
	require.WithinDuration(t, time.Now(), plain.Event.OccurredAt, time.Minute)
	require.Equal(t, 2, rawCount(t, w.db.Pool, w.ws[0], "true"))
}

func TestRecordRefusesBadEvents(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	s := newService(t, &usage.Config{Clock: newClock(now).Now})
	a := w.tenant(t, w.db.Pool, 0)
	good := usage.RecordParams{User: w.owners[0], OperationType: usage.Embedding, Quantity: 1}
	for name, tc := range map[string]struct {
		change func(*usage.RecordParams)
		want   error
	}{
		"unknown operation type": {func(p *usage.RecordParams) { p.OperationType = "acme.nothing" }, usage.ErrUnknownOperationType},
		"malformed type":         {func(p *usage.RecordParams) { p.OperationType = "Chat Completion" }, tenancy.ErrInvalidInput},
		"negative quantity":      {func(p *usage.RecordParams) { p.Quantity = -1 }, tenancy.ErrInvalidInput},
		"huge credits":           {func(p *usage.RecordParams) { p.Credits = usage.MaxCredits + 1 }, tenancy.ErrInvalidInput},
		"future":                 {func(p *usage.RecordParams) { p.OccurredAt = now.Add(6 * time.Minute) }, usage.ErrFutureEvent},
		"too old":                {func(p *usage.RecordParams) { p.OccurredAt = time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC) }, tenancy.ErrInvalidInput},
		"oversized metadata": {func(p *usage.RecordParams) {
			p.Metadata = json.RawMessage(`{"x":"` + string(make([]byte, 0)) + repeat("a", 5000) + `"}`)
		}, tenancy.ErrInvalidInput},
		"metadata not an object": {func(p *usage.RecordParams) { p.Metadata = json.RawMessage(`[1]`) }, tenancy.ErrInvalidInput},
		"metadata NUL":           {func(p *usage.RecordParams) { p.Metadata = json.RawMessage(`{"x":"\u0000"}`) }, tenancy.ErrInvalidInput},
		"NUL in model":           {func(p *usage.RecordParams) { p.Model = "a\x00b" }, tenancy.ErrInvalidInput},
		"bad UTF-8 key":          {func(p *usage.RecordParams) { p.IdempotencyKey = "\xff" }, tenancy.ErrInvalidInput},
		"no user":                {func(p *usage.RecordParams) { p.User = tenancy.UserID{} }, tenancy.ErrInvalidInput},
		"bad status":             {func(p *usage.RecordParams) { p.Status = "maybe" }, tenancy.ErrInvalidInput},
		"bad unit":               {func(p *usage.RecordParams) { p.Unit = "Tokens" }, tenancy.ErrInvalidInput},
		"bad feature":            {func(p *usage.RecordParams) { p.FeatureKey = "Chat Large" }, tenancy.ErrInvalidInput},
	} {
		p := good
		tc.change(&p)
		_, err := s.Record(ctx, a, p)
		require.ErrorIs(t, err, tc.want, name)
	}
	require.Zero(t, rawCount(t, w.db.Pool, w.ws[0], "true"))
	_, err := s.Record(ctx, a, good)
	require.NoError(t, err)
}

func repeat(s string, n int) string {
	out := make([]byte, 0, len(s)*n)
	for range n {
		out = append(out, s...)
	}
	return string(out)
}
