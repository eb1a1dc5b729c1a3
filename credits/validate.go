package credits

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/meterbase/meterbase/tenancy"
)

// Bounds on input, checked before any SQL is sent.
const (
	// MaxAmount bounds one grant, spend, hold, capture or refund, and a
	// credit limit. An account holds at most MaxAccountCredits, so no sum
	// the ledger computes can overflow int64.
	MaxAmount = 1_000_000_000_000_000
	// MaxAccountCredits bounds an account's credits, scheduled ones
	// included (2^60); a grant that would pass it is refused.
	MaxAccountCredits = 1 << 60
	// MaxKeyBytes bounds an idempotency key.
	MaxKeyBytes = 255
	// MaxReferenceBytes bounds a reference.
	MaxReferenceBytes = 255
	// MaxMetadataBytes bounds a grant's metadata, as compact JSON.
	MaxMetadataBytes = 4096
	// MaxHoldTTL bounds a hold's time to live.
	MaxHoldTTL = 90 * 24 * time.Hour
	// MaxBatch bounds the accounts of one Balances call.
	MaxBatch = 1000
)

func invalid(field, format string, args ...any) error {
	return &tenancy.InvalidInputError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

func checkAmount(field string, n int64) error {
	switch {
	case n <= 0:
		return invalid(field, "%d is not positive", n)
	case n > MaxAmount:
		return invalid(field, "%d is more than %d", n, int64(MaxAmount))
	}
	return nil
}

// checkText refuses what Postgres cannot store in text or what is too long.
func checkText(field, s string, maxBytes int) error {
	switch {
	case len(s) > maxBytes:
		return invalid(field, "is %d bytes; at most %d", len(s), maxBytes)
	case !utf8.ValidString(s):
		return invalid(field, "is not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return invalid(field, "contains a NUL byte")
	}
	return nil
}

func checkKey(key string) error {
	if key == "" {
		return invalid("idempotency key", "is empty; every state change takes one, so that a retry applies it once")
	}
	return checkText("idempotency key", key, MaxKeyBytes)
}

func checkID[K tenancy.Kind](id tenancy.ID[K]) error { return id.Valid() }

func checkCategory(c Category) error {
	switch c {
	case CategoryPurchase, CategoryPlan, CategoryPromotional, CategoryTrial, CategoryRefund, CategoryAdjustment:
		return nil
	}
	return invalid("category", "%q is not purchase, plan, promotional, trial, refund or adjustment", string(c))
}

// normalizeMetadata returns the metadata as compact JSON ({} when empty),
// refusing what is not one JSON object that jsonb can store.
func normalizeMetadata(m json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(m)) == 0 {
		return json.RawMessage(`{}`), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(m, &obj); err != nil || obj == nil {
		return nil, invalid("metadata", "is not a JSON object")
	}
	var b bytes.Buffer
	if err := json.Compact(&b, m); err != nil {
		return nil, invalid("metadata", "is not a JSON object")
	}
	if b.Len() > MaxMetadataBytes {
		return nil, invalid("metadata", "is %d bytes as compact JSON; at most %d", b.Len(), MaxMetadataBytes)
	}
	// jsonb refuses the NUL character, and invalid UTF-8 would be replaced.
	if bytes.Contains(b.Bytes(), []byte(`\u0000`)) || !utf8.Valid(b.Bytes()) {
		return nil, invalid("metadata", "contains a NUL character or invalid UTF-8")
	}
	return b.Bytes(), nil
}

// request is the canonical form of a state change's parameters: what a
// retry with the same key must repeat exactly. Its hash is stored with the
// key; another request under the same key is a conflict.
type request struct{ h hash.Hash }

func newRequest(op string) *request {
	r := &request{h: sha256.New()}
	r.str("meterbase.credits/" + op)
	return r
}

func (r *request) str(s string) *request {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	r.h.Write(n[:])
	r.h.Write([]byte(s))
	return r
}

func (r *request) int(v int64) *request {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(v))
	r.h.Write(n[:])
	return r
}

func (r *request) id(u uuid.UUID) *request {
	r.h.Write(u[:])
	return r
}

// time writes an optional instant: the zero time is its own value, so that
// "now" stays "now" in a retry made later.
func (r *request) time(t time.Time) *request {
	if t.IsZero() {
		return r.int(math.MinInt64)
	}
	return r.int(t.UnixMicro())
}

func (r *request) sum() []byte { return r.h.Sum(nil) }
