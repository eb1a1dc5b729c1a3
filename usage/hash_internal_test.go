package usage

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// streamedHash is the request hash as it was first written, field by field
// into the hash: keys recorded then must still match their retries.
func streamedHash(e prepared) []byte {
	h := sha256.New()
	var buf []byte
	str := func(s string) {
		buf = binary.AppendUvarint(buf[:0], uint64(len(s)))
		h.Write(buf)
		h.Write([]byte(s))
	}
	num := func(n int64) {
		buf = binary.BigEndian.AppendUint64(buf[:0], uint64(n))
		h.Write(buf)
	}
	h.Write([]byte("meterbase.usage.record.v1"))
	h.Write(e.user[:])
	str(e.opType)
	str(e.feature)
	str(e.unit)
	num(e.quantity)
	num(e.credits)
	num(e.price)
	num(e.perUnits)
	str(e.model)
	str(e.status)
	num(e.durationMs)
	str(e.metadata)
	h.Write(e.ledger[:])
	if e.occurredAt.IsZero() {
		num(0)
	} else {
		num(e.occurredAt.UnixMicro())
	}
	return h.Sum(nil)[:16]
}

// The request hash is the same bytes as it always was, for short and long
// fields (longer than its buffer), empty ones and a zero time; and one
// event's hash is pinned.
func TestRequestHashIsStable(t *testing.T) {
	t.Parallel()
	base := prepared{
		user: uuid.MustParse("0190c8a0-0000-7000-8000-000000000001"), opType: "chat.completion", feature: "chat",
		unit: "input_tokens", quantity: 1200, credits: 36, price: 3, perUnits: 100, model: "gpt-x", status: "succeeded",
		durationMs: 1500, metadata: `{"request":"r1"}`, key: "req-1", occurredAt: time.Date(2025, 4, 1, 12, 0, 0, 0, time.UTC),
	}
	require.Equal(t, "6e330a391fc047bfa5bdc8cd5f4fcd59", hex.EncodeToString(base.requestHash()), "the pinned hash (of the first version)")
	variants := []func(e *prepared){
		func(*prepared) {},
		func(e *prepared) { e.occurredAt = time.Time{} },
		func(e *prepared) { e.feature, e.unit, e.model, e.metadata = "", "", "", "" },
		func(e *prepared) { e.metadata = `{"note":"` + strings.Repeat("é", 3000) + `"}` },
		func(e *prepared) {
			e.model = strings.Repeat("m", 200)
			e.ledger = uuid.MustParse("0190c8a0-0000-7000-8000-0000000000ff")
		},
		func(e *prepared) {
			e.quantity, e.credits, e.price, e.perUnits, e.durationMs = MaxQuantity, MaxCredits, 0, 1, 0
		},
		func(e *prepared) { e.status = "failed"; e.occurredAt = time.Date(2000, 1, 1, 0, 0, 0, 1000, time.UTC) },
	}
	seen := map[string]bool{}
	for i, change := range variants {
		e := base
		change(&e)
		got := e.requestHash()
		require.Equal(t, streamedHash(e), got, "variant %d", i)
		require.Len(t, got, 16)
		seen[hex.EncodeToString(got)] = true
	}
	require.Len(t, seen, len(variants), "every variant hashes differently")
}
