package usage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	sq "github.com/Masterminds/squirrel"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/meterbase/meterbase/tenancy"
)

// AdjustmentKind says what an adjustment did to its event.
type AdjustmentKind string

const (
	// KindVoid takes an event out of every summary; it stays in the history,
	// marked voided.
	KindVoid AdjustmentKind = "void"
	// KindCorrection changes an event's quantity or credits.
	KindCorrection AdjustmentKind = "correction"
)

// Adjustment is the audit record of a void or correction: the event's
// amounts before and after, who made it, when and why.
type Adjustment struct {
	ID             AdjustmentID   `json:"id"`
	EventID        EventID        `json:"eventId"`
	Kind           AdjustmentKind `json:"kind"`
	Reason         string         `json:"reason"`
	QuantityBefore int64          `json:"quantityBefore"`
	QuantityAfter  int64          `json:"quantityAfter"`
	CreditsBefore  int64          `json:"creditsBefore"`
	CreditsAfter   int64          `json:"creditsAfter"`
	// EventVersion is the version the event got: an event's adjustments
	// in this order chain each one's after to the next one's before.
	EventVersion   int            `json:"eventVersion"`
	Actor          tenancy.UserID `json:"actorUserId,omitzero"`
	IdempotencyKey string         `json:"idempotencyKey,omitzero"`
	CreatedAt      time.Time      `json:"createdAt"`
}

// AdjustResult is an adjustment. Replay is true when the same request was
// made before under the same key: nothing changed, and Adjustment is the
// stored one.
type AdjustResult struct {
	Adjustment Adjustment `json:"adjustment"`
	Replay     bool       `json:"replay"`
}

// VoidParams say which event to void, and why.
type VoidParams struct {
	Event  EventID
	Reason string         // required, at most 500 characters
	Actor  tenancy.UserID // who voids it; optional
	// IdempotencyKey makes the void safe to retry (a void is final anyway:
	// without a key a retry gets ErrEventVoided).
	IdempotencyKey string
}

// CorrectParams say which event to correct, to what, and why. A nil amount
// stays as it is.
type CorrectParams struct {
	Event          EventID
	Quantity       *int64
	Credits        *int64
	Reason         string
	Actor          tenancy.UserID
	IdempotencyKey string
}

// Void takes an event out of every summary, in one round trip, writing an
// audit adjustment: the rollups lose its count, quantity and credits in
// the same transaction. tenancy.ErrNotFound if the workspace has no such
// event; ErrEventVoided if it was voided already (unless this is a retry
// under the same key, which returns the first result as a replay).
func (s *Service) Void(ctx context.Context, t *tenancy.Tenant, p VoidParams) (AdjustResult, error) {
	return s.adjust(ctx, t, adjustment{kind: KindVoid, event: p.Event, reason: p.Reason, actor: p.Actor, key: p.IdempotencyKey})
}

// Correct sets an event's quantity or credits, in one round trip, writing
// an audit adjustment with both amounts before and after; the summaries
// move by the difference. Errors as Void's; a retry under the same key
// with other amounts is an *IdempotencyConflictError.
func (s *Service) Correct(ctx context.Context, t *tenancy.Tenant, p CorrectParams) (AdjustResult, error) {
	if p.Quantity == nil && p.Credits == nil {
		return AdjustResult{}, invalid("correction", "changes neither quantity nor credits")
	}
	if p.Quantity != nil && (*p.Quantity < 0 || *p.Quantity > MaxQuantity) {
		return AdjustResult{}, invalid("quantity", fmt.Sprintf("%d is not between 0 and %d", *p.Quantity, MaxQuantity))
	}
	if p.Credits != nil && (*p.Credits < 0 || *p.Credits > MaxCredits) {
		return AdjustResult{}, invalid("credits", fmt.Sprintf("%d is not between 0 and %d", *p.Credits, MaxCredits))
	}
	return s.adjust(ctx, t, adjustment{kind: KindCorrection, event: p.Event, quantity: p.Quantity, credits: p.Credits,
		reason: p.Reason, actor: p.Actor, key: p.IdempotencyKey})
}

type adjustment struct {
	kind              AdjustmentKind
	event             EventID
	quantity, credits *int64
	reason            string
	actor             tenancy.UserID
	key               string
}

func (a adjustment) check() (string, error) {
	if err := a.event.Valid(); err != nil {
		return "", err
	}
	if err := checkText("reason", a.reason); err != nil {
		return "", err
	}
	reason := strings.TrimSpace(a.reason)
	if reason == "" {
		return "", invalid("reason", "is empty; say why the event changes")
	}
	if utf8.RuneCountInString(reason) > 500 {
		return "", invalid("reason", "is longer than 500 characters")
	}
	if a.key != "" {
		if err := checkText("idempotency key", a.key); err != nil {
			return "", err
		}
		if len(a.key) > 255 {
			return "", invalid("idempotency key", "is longer than 255 bytes")
		}
	}
	return reason, nil
}

func (a adjustment) requestHash(reason string) []byte {
	h := sha256.New()
	var buf []byte
	h.Write([]byte("meterbase.usage.adjust.v1"))
	id := a.event.UUID()
	h.Write(id[:])
	actor := a.actor.UUID()
	h.Write(actor[:])
	for _, s := range []string{string(a.kind), reason} {
		buf = binary.AppendUvarint(buf[:0], uint64(len(s)))
		h.Write(buf)
		h.Write([]byte(s))
	}
	for _, n := range []*int64{a.quantity, a.credits} {
		if n == nil {
			h.Write([]byte{0})
			continue
		}
		h.Write([]byte{1})
		h.Write(binary.BigEndian.AppendUint64(buf[:0], uint64(*n)))
	}
	return h.Sum(nil)[:16]
}

func (s *Service) adjust(ctx context.Context, t *tenancy.Tenant, a adjustment) (AdjustResult, error) {
	if err := usable(t); err != nil {
		return AdjustResult{}, err
	}
	reason, err := a.check()
	if err != nil {
		return AdjustResult{}, err
	}
	var hash []byte
	if a.key != "" {
		hash = a.requestHash(reason)
	}
	var actor *pgtype.UUID
	if !a.actor.IsZero() {
		actor = &pgtype.UUID{Bytes: a.actor.UUID(), Valid: true}
	}
	args := tenancy.Args{
		"adjustment_id": tenancy.NewID[adjustmentKind](), "event_id": a.event, "kind": string(a.kind), "reason": reason,
		"quantity": a.quantity, "credits": a.credits, "actor_user_id": actor, "idempotency_key": nullText(a.key),
		"request_hash": hash, "now": s.cfg.now(),
	}
	var (
		found, voided bool
		row           adjustmentRow
	)
	dest := append([]any{&found, &voided}, row.dest()...)
	if err := queryRow(ctx, t, stmtAdjust, args).Scan(dest...); err != nil {
		return AdjustResult{}, fmt.Errorf("usage: %s: %w", a.kind, err)
	}
	if !row.replay.Valid && a.key != "" {
		// A concurrent first attempt under the same key may have written
		// the adjustment after this statement's snapshot.
		err := queryRow(ctx, t, stmtAdjustmentByKey, tenancy.Args{"idempotency_key": a.key}).Scan(row.dest()...)
		if err != nil && !errors.Is(err, tenancy.ErrNotFound) {
			return AdjustResult{}, fmt.Errorf("usage: %s: read the adjustment of key %q: %w", a.kind, a.key, err)
		}
	}
	switch {
	case !row.replay.Valid && !found:
		return AdjustResult{}, fmt.Errorf("%w: usage event %s", tenancy.ErrNotFound, a.event)
	case !row.replay.Valid:
		return AdjustResult{}, fmt.Errorf("%w: %s", ErrEventVoided, a.event)
	}
	adj := row.adjustment()
	if !row.replay.Bool {
		return AdjustResult{Adjustment: adj}, nil
	}
	if !bytes.Equal(row.hash, hash) {
		return AdjustResult{}, &IdempotencyConflictError{Key: a.key, Existing: "adjustment " + adj.ID.String()}
	}
	return AdjustResult{Adjustment: adj, Replay: true}, nil
}

type adjustmentRow struct {
	replay                           pgtype.Bool
	id, event, actor                 pgtype.UUID
	kind, reason, key                pgtype.Text
	qBefore, qAfter, cBefore, cAfter pgtype.Int8
	eventVersion                     pgtype.Int8
	createdAt                        pgtype.Timestamptz
	hash                             []byte
}

func (r *adjustmentRow) dest() []any {
	return []any{&r.replay, &r.id, &r.event, &r.kind, &r.reason, &r.qBefore, &r.qAfter, &r.cBefore, &r.cAfter,
		&r.eventVersion, &r.actor, &r.key, &r.createdAt, &r.hash}
}

func (r *adjustmentRow) adjustment() Adjustment {
	a := Adjustment{
		ID: tenancy.IDFromUUID[adjustmentKind](r.id.Bytes), EventID: tenancy.IDFromUUID[eventKind](r.event.Bytes),
		Kind: AdjustmentKind(r.kind.String), Reason: r.reason.String, QuantityBefore: r.qBefore.Int64,
		QuantityAfter: r.qAfter.Int64, CreditsBefore: r.cBefore.Int64, CreditsAfter: r.cAfter.Int64,
		EventVersion: int(r.eventVersion.Int64), IdempotencyKey: r.key.String, CreatedAt: r.createdAt.Time.UTC(),
	}
	if r.actor.Valid {
		a.Actor = tenancy.UserIDFromUUID(r.actor.Bytes)
	}
	return a
}

// ListAdjustmentsParams ask for a page of the audit trail, newest first.
type ListAdjustmentsParams struct {
	// Event keeps one event's adjustments only, in the order they were
	// made (by EventVersion), newest first.
	Event EventID
	Page  tenancy.Page
}

const adjustmentsList = "usage.adjustments"

const adjustmentColumns = "false, adjustment_id, event_id, kind, reason, quantity_before, quantity_after, credits_before, credits_after, event_version, actor_user_id, idempotency_key, created_at, request_hash"

// ListAdjustments lists the workspace's voids and corrections, newest
// first (by when they were made; an event's by the order they were
// applied in), a page at a time.
func (s *Service) ListAdjustments(ctx context.Context, t *tenancy.Tenant, p ListAdjustmentsParams) (tenancy.List[Adjustment], error) {
	if err := usable(t); err != nil {
		return tenancy.List[Adjustment]{}, err
	}
	list := adjustmentsList
	if !p.Event.IsZero() {
		list += ":" + p.Event.String()
	}
	q, err := p.Page.Query(t, list)
	if err != nil {
		return tenancy.List[Adjustment]{}, err
	}
	filter := func(b tenancy.SelectBuilder) tenancy.SelectBuilder {
		if !p.Event.IsZero() {
			b = b.Where(sq.Eq{"event_id": p.Event})
		}
		return b
	}
	sel := filter(t.Select(adjustmentsTable, adjustmentColumns)).Limit(uint64(q.Limit) + 1)
	key := func(a Adjustment) tenancy.Keyset { return tenancy.Keyset{Time: a.CreatedAt, ID: a.ID.UUID()} }
	if p.Event.IsZero() {
		sel = sel.OrderBy("created_at DESC", "adjustment_id DESC")
		if q.After != nil {
			sel = sel.Where("(created_at, adjustment_id) < (?, ?)", q.After.Time, tenancy.IDFromUUID[adjustmentKind](q.After.ID))
		}
	} else {
		sel = sel.OrderBy("event_version DESC")
		key = func(a Adjustment) tenancy.Keyset { return tenancy.Keyset{Int: int64(a.EventVersion)} }
		if q.After != nil {
			sel = sel.Where("event_version < ?", q.After.Int)
		}
	}
	if q.Offset > 0 {
		sel = sel.Offset(uint64(q.Offset))
	}
	rows, err := sel.Query(ctx)
	if err != nil {
		return tenancy.List[Adjustment]{}, fmt.Errorf("usage: list adjustments: %w", err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Adjustment, error) {
		var r adjustmentRow
		err := row.Scan(r.dest()...)
		return r.adjustment(), err
	})
	if err != nil {
		return tenancy.List[Adjustment]{}, fmt.Errorf("usage: list adjustments: %w", err)
	}
	out := tenancy.Paginate(t, list, q, items, key)
	if q.WithTotal {
		var total int64
		if err := filter(t.Select(adjustmentsTable, "count(*)")).QueryRow(ctx).Scan(&total); err != nil {
			return tenancy.List[Adjustment]{}, fmt.Errorf("usage: count adjustments: %w", err)
		}
		out.Total = &total
	}
	return out, nil
}
