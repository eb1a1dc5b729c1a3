package usage_test

import (
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// Results marshal as a client cache expects them: camelCase names, ids
// as strings, RFC 3339 times, integer amounts.
func TestResultsMarshalForClients(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	a := w.tenant(t, w.db.Pool, 0)
	at := time.Date(2025, 9, 1, 12, 30, 0, 0, time.UTC)
	rec, err := s.Record(ctx, a, usage.RecordParams{User: w.shared, OperationType: usage.ChatCompletion, Quantity: 1200, Unit: "input_tokens",
		Credits: 36, Price: usage.Price{Credits: 3, PerUnits: 100}, Model: "m", IdempotencyKey: "k", OccurredAt: at,
		Metadata: json.RawMessage(`{"a":1}`)})
	require.NoError(t, err)
	adj, err := s.Void(ctx, a, usage.VoidParams{Event: rec.Event.ID, Reason: "test", Actor: w.owners[0]})
	require.NoError(t, err)
	batch, err := s.RecordBatch(ctx, a, []usage.RecordParams{{User: w.shared, OperationType: "acme.none", Quantity: 1, IdempotencyKey: "x"}})
	require.NoError(t, err)
	sum, err := s.Summarize(ctx, a, usage.SummaryParams{From: at.Add(-time.Hour), To: at.Add(time.Hour), Window: usage.Hourly, TimeZone: "Europe/Paris"})
	require.NoError(t, err)

	decode := func(v any) map[string]any {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m))
		return m
	}
	uuidText := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	r := decode(rec)
	require.Equal(t, false, r["replay"])
	e := r["event"].(map[string]any)
	require.Regexp(t, uuidText, e["id"])
	require.Equal(t, w.ws[0].String(), e["workspaceId"])
	require.Equal(t, w.shared.String(), e["userId"])
	require.Equal(t, "chat.completion", e["operationType"])
	require.Equal(t, "input_tokens", e["unit"])
	require.Equal(t, float64(1200), e["quantity"])
	require.Equal(t, map[string]any{"credits": float64(3), "perUnits": float64(100)}, e["price"])
	require.Equal(t, "2025-09-01T12:30:00Z", e["occurredAt"])
	require.Equal(t, map[string]any{"a": float64(1)}, e["metadata"])
	require.Equal(t, float64(1), e["version"])
	require.NotContains(t, e, "voidedAt", "unset fields are left out")
	require.NotContains(t, e, "ledgerEntryId")

	v := decode(adj)["adjustment"].(map[string]any)
	require.Equal(t, "void", v["kind"])
	require.Equal(t, rec.Event.ID.String(), v["eventId"])
	require.Equal(t, w.owners[0].String(), v["actorUserId"])
	require.Equal(t, float64(2), v["eventVersion"])
	_, err = time.Parse(time.RFC3339Nano, v["createdAt"].(string))
	require.NoError(t, err)

	b := decode(batch)
	require.Equal(t, float64(0), b["inserted"])
	rejected := b["rejected"].([]any)[0].(map[string]any)
	require.Equal(t, float64(0), rejected["index"])
	require.Equal(t, "x", rejected["key"])
	require.Contains(t, rejected["error"], "unknown operation type")

	// The voided event is out of the summary: the hour is empty.
	require.Empty(t, sum.Rows)
	m := decode(sum)
	require.Equal(t, []any{}, m["rows"])
	require.Equal(t, map[string]any{"events": float64(0), "failed": float64(0), "quantity": float64(0), "credits": float64(0)}, m["total"])

	list, err := s.List(ctx, a, usage.ListParams{IncludeVoided: true, Page: tenancy.Page{Limit: 1, WithTotal: true}})
	require.NoError(t, err)
	l := decode(list)
	require.Equal(t, float64(1), l["total"])
	item := l["items"].([]any)[0].(map[string]any)
	require.Contains(t, item, "voidedAt")
}
