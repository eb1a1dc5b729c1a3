package usage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/meterbase/meterbase/tenancy"
)

// Event is one AI operation in a workspace's usage history. A list loads
// the columns it was asked for (see Column); the others stay zero and are
// left out of its JSON.
type Event struct {
	ID             EventID             `json:"id"`
	WorkspaceID    tenancy.WorkspaceID `json:"workspaceId"`
	UserID         tenancy.UserID      `json:"userId,omitzero"`
	OperationType  OperationType       `json:"operationType,omitzero"`
	FeatureKey     string              `json:"featureKey,omitzero"`
	Quantity       int64               `json:"quantity,omitzero"`
	Unit           string              `json:"unit,omitzero"`
	Credits        int64               `json:"credits,omitzero"`
	Price          Price               `json:"price,omitzero"`
	Model          string              `json:"model,omitzero"`
	Status         Status              `json:"status,omitzero"`
	DurationMs     int64               `json:"durationMs,omitzero"`
	Metadata       json.RawMessage     `json:"metadata,omitzero"`
	IdempotencyKey string              `json:"idempotencyKey,omitzero"`
	// LedgerEntryID is the credit ledger entry that paid for the event,
	// when one did (metering sets it; usage does not read the ledger).
	LedgerEntryID uuid.UUID `json:"ledgerEntryId,omitzero"`
	OccurredAt    time.Time `json:"occurredAt"`
	RecordedAt    time.Time `json:"recordedAt,omitzero"`
	// VoidedAt is set once the event is voided; a voided event counts in
	// no summary.
	VoidedAt *time.Time `json:"voidedAt,omitzero"`
	// Version starts at 1 and grows with each correction.
	Version   int       `json:"version,omitzero"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// RecordParams describe one event to record.
type RecordParams struct {
	User          tenancy.UserID // required
	OperationType OperationType  // required; a key of operation_types
	// FeatureKey is the feature the event was metered under, if any (the
	// same form as the features catalog's keys; usage does not look it up).
	FeatureKey string
	// Quantity is how much was used, a whole number of Unit (count
	// milliseconds rather than fractions of seconds). 0 to MaxQuantity.
	Quantity int64
	// Unit is what Quantity counts: input_tokens, output_tokens, images,
	// seconds... Default: the operation type's unit.
	Unit string
	// Credits is what the event was charged, 0 to MaxCredits.
	Credits int64
	// Price is the price in force, kept as it was. PerUnits 0 means 1.
	Price    Price
	Model    string        // the model or endpoint, at most 200 characters
	Status   Status        // default Succeeded
	Duration time.Duration // how long the operation took; stored in milliseconds
	// Metadata is a JSON object of the host's, at most
	// Config.MaxMetadataBytes once compacted.
	Metadata json.RawMessage
	// IdempotencyKey makes recording safe to retry: within the workspace, a
	// second event with the key is not recorded again (see Record).
	// Optional, at most 255 bytes.
	IdempotencyKey string
	LedgerEntryID  uuid.UUID // optional
	// OccurredAt is when the operation happened. Default: now. Late events
	// are welcome; one dated more than Config.MaxFutureSkew ahead, or before
	// the retention horizon, is refused.
	OccurredAt time.Time
}

// Bounds of an event's amounts: far below bigint's end, so that no sum of
// them a summary makes can come near it.
const (
	MaxQuantity int64 = 1 << 50
	MaxCredits  int64 = 1 << 50
)

// minOccurredAt is the earliest time an event may carry (the schema's own
// bound).
var minOccurredAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// maxOccurredAt is past any time an event may carry, whatever the clock.
var maxOccurredAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)

const maxDuration = 365 * 24 * time.Hour

// prepared is an event checked and normalised, ready to send.
type prepared struct {
	id         uuid.UUID
	user       uuid.UUID
	opType     string
	feature    string
	unit       string // "" for the operation type's
	quantity   int64
	credits    int64
	price      int64
	perUnits   int64
	model      string
	status     string
	durationMs int64
	metadata   string    // "" for none
	key        string    // "" for none
	hash       []byte    // nil without a key
	ledger     uuid.UUID // zero for none
	occurredAt time.Time // zero for now
}

func invalid(field, reason string) error {
	return &tenancy.InvalidInputError{Field: field, Reason: reason}
}

func checkText(field, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return invalid(field, "contains a NUL byte, which Postgres cannot store in text")
	}
	if !utf8.ValidString(s) {
		return invalid(field, "is not valid UTF-8")
	}
	return nil
}

// prepare checks p and normalises it, before any SQL. now is the
// configured clock's time, or nil for the database's.
func (c config) prepare(p RecordParams, now *time.Time) (prepared, error) {
	e := prepared{
		user: p.User.UUID(), opType: string(p.OperationType), feature: p.FeatureKey, unit: p.Unit,
		quantity: p.Quantity, credits: p.Credits, price: p.Price.Credits, perUnits: p.Price.PerUnits,
		model: p.Model, status: string(p.Status), key: p.IdempotencyKey, ledger: p.LedgerEntryID,
	}
	if err := p.User.Valid(); err != nil {
		return prepared{}, err
	}
	if err := p.OperationType.Valid(); err != nil {
		return prepared{}, err
	}
	if e.feature != "" && !isFeatureKey(e.feature) {
		return prepared{}, invalid("feature key", fmt.Sprintf("%q is not 1 to 64 lower-case words joined by '.' or '-'", e.feature))
	}
	if e.unit != "" {
		if err := checkUnit(e.unit); err != nil {
			return prepared{}, err
		}
	}
	for _, a := range []struct {
		field string
		v     int64
		max   int64
	}{{"quantity", e.quantity, MaxQuantity}, {"credits", e.credits, MaxCredits}, {"price credits", e.price, MaxCredits}, {"price units", e.perUnits, MaxQuantity}} {
		if a.v < 0 || a.v > a.max {
			return prepared{}, invalid(a.field, fmt.Sprintf("%d is not between 0 and %d", a.v, a.max))
		}
	}
	if e.perUnits == 0 {
		e.perUnits = 1
	}
	if err := checkText("model", e.model); err != nil {
		return prepared{}, err
	}
	if utf8.RuneCountInString(e.model) > 200 {
		return prepared{}, invalid("model", "is longer than 200 characters")
	}
	if e.status == "" {
		e.status = string(Succeeded)
	}
	if err := Status(e.status).Valid(); err != nil {
		return prepared{}, err
	}
	if p.Duration < 0 || p.Duration > maxDuration {
		return prepared{}, invalid("duration", fmt.Sprintf("%s is not between 0 and %s", p.Duration, maxDuration))
	}
	e.durationMs = p.Duration.Milliseconds()
	if len(p.Metadata) > 0 {
		m, err := c.metadata(p.Metadata)
		if err != nil {
			return prepared{}, err
		}
		e.metadata = m
	}
	if e.key != "" {
		if err := checkText("idempotency key", e.key); err != nil {
			return prepared{}, err
		}
		if len(e.key) > 255 {
			return prepared{}, invalid("idempotency key", "is longer than 255 bytes")
		}
	}
	if !p.OccurredAt.IsZero() {
		e.occurredAt = p.OccurredAt.UTC().Truncate(time.Microsecond)
		if e.occurredAt.Before(minOccurredAt) {
			return prepared{}, invalid("occurred at", fmt.Sprintf("%s is before %s", e.occurredAt.Format(time.RFC3339), minOccurredAt.Format(time.RFC3339)))
		}
		// Checked here even when the database's clock judges the future:
		// the microseconds of a time far enough ahead wrap around int64,
		// on their way there, into a valid, wrong instant.
		if !e.occurredAt.Before(maxOccurredAt) {
			return prepared{}, invalid("occurred at", fmt.Sprintf("%s is not before %s", e.occurredAt.Format(time.RFC3339), maxOccurredAt.Format(time.RFC3339)))
		}
		if now != nil {
			if limit := now.Add(c.futureSkew); e.occurredAt.After(limit) {
				return prepared{}, &TimeError{Kind: ErrFutureEvent, OccurredAt: e.occurredAt, Limit: limit}
			}
		}
	}
	if e.key != "" {
		e.hash = e.requestHash()
	}
	e.id = tenancy.NewID[eventKind]().UUID()
	return e, nil
}

// metadata checks and compacts an event's metadata.
func (c config) metadata(raw json.RawMessage) (string, error) {
	if !utf8.Valid(raw) {
		return "", invalid("metadata", "is not valid UTF-8")
	}
	var m string
	if bytes.ContainsAny(raw, " \t\r\n") {
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			return "", invalid("metadata", "is not valid JSON: "+err.Error())
		}
		m = b.String()
	} else {
		// Already compact: validating it is enough, and allocates nothing.
		if !json.Valid(raw) {
			return "", invalid("metadata", "is not valid JSON")
		}
		m = string(raw)
	}
	if !strings.HasPrefix(m, "{") {
		return "", invalid("metadata", "is not a JSON object")
	}
	// jsonb cannot hold a NUL character, even escaped.
	if strings.Contains(m, `\u0000`) {
		return "", invalid("metadata", `contains \u0000, which Postgres cannot store`)
	}
	if len(m) > c.maxMetadata {
		return "", invalid("metadata", fmt.Sprintf("is %d bytes of JSON; the limit is %d", len(m), c.maxMetadata))
	}
	return m, nil
}

// requestHash identifies the request as the caller gave it (a default
// left to the server, such as the time, counts as given empty), so that a
// retry of the same request matches and any other request does not.
func (e prepared) requestHash() []byte {
	// The fields are written into one buffer and hashed at once: the same
	// bytes as writing them one by one, without an allocation per field.
	var arr [256]byte
	b := append(arr[:0], "meterbase.usage.record.v1"...)
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	num := func(n int64) { b = binary.BigEndian.AppendUint64(b, uint64(n)) }
	b = append(b, e.user[:]...)
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
	b = append(b, e.ledger[:]...)
	if e.occurredAt.IsZero() {
		num(0)
	} else {
		num(e.occurredAt.UnixMicro())
	}
	sum := sha256.Sum256(b)
	return append([]byte(nil), sum[:16]...)
}
