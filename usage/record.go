package usage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/meterbase/meterbase/tenancy"
)

// RecordResult is a recorded event. Replay is true when the event was
// recorded before, under the same idempotency key and for the same
// request: nothing was written, and Event is the stored one.
type RecordResult struct {
	Event  Event `json:"event"`
	Replay bool  `json:"replay"`
}

// Record records one event, in one round trip. With an idempotency key it
// is safe to retry: a key the workspace has recorded before, for the same
// request, returns the stored event flagged as a replay; for a different
// request, an *IdempotencyConflictError. Two first attempts at once record
// one event, and the other gets it as a replay.
//
// Errors: tenancy.ErrInvalidInput for bad params (before any SQL), an
// *UnknownOperationTypeError, a *TimeError (ErrFutureEvent, ErrRetained).
func (s *Service) Record(ctx context.Context, t *tenancy.Tenant, p RecordParams) (RecordResult, error) {
	if err := usable(t); err != nil {
		return RecordResult{}, err
	}
	now := s.cfg.now()
	e, err := s.cfg.prepare(p, now)
	if err != nil {
		return RecordResult{}, err
	}
	args := tenancy.Args{
		"event_id": pgtype.UUID{Bytes: e.id, Valid: true}, "event_user": pgtype.UUID{Bytes: e.user, Valid: true}, "operation_type": e.opType, "feature_key": e.feature, "unit": e.unit,
		"quantity": e.quantity, "credits": e.credits, "price_credits": e.price, "price_unit_quantity": e.perUnits,
		"model": e.model, "status": e.status, "duration_ms": e.durationMs, "metadata": nullText(e.metadata),
		"idempotency_key": nullText(e.key), "request_hash": e.hash, "ledger_entry_id": nullUUID(e.ledger),
		"occurred_at": nullTime(e.occurredAt), "now": now, "max_future": s.cfg.futureSkew,
	}
	var (
		problem   *string
		occurred  time.Time
		latest    time.Time
		horizon   *time.Time
		stored    eventRow
		storedErr error
	)
	dest := append([]any{&problem, &occurred, &latest, &horizon}, stored.dest()...)
	if err := queryRow(ctx, t, stmtRecord, args).Scan(dest...); err != nil {
		return RecordResult{}, fmt.Errorf("usage: record: %w", err)
	}
	if !stored.replay.Valid && problem == nil {
		// Another transaction took the key after this statement's snapshot
		// was taken; it has committed (the insert waited for it), so a new
		// statement sees its event.
		storedErr = queryRow(ctx, t, stmtEventByKey, tenancy.Args{"idempotency_key": e.key}).Scan(stored.dest()...)
		if storedErr != nil {
			return RecordResult{}, fmt.Errorf("usage: record: read the event of key %q: %w", e.key, storedErr)
		}
	}
	if !stored.replay.Valid {
		return RecordResult{}, problemError(*problem, e.opType, occurred, latest, horizon)
	}
	ev := stored.event(t.Scope().Workspace())
	if !stored.replay.Bool {
		return RecordResult{Event: ev}, nil
	}
	if !bytes.Equal(stored.hash, e.hash) {
		return RecordResult{}, &IdempotencyConflictError{Key: e.key, Existing: "event " + ev.ID.String()}
	}
	return RecordResult{Event: ev, Replay: true}, nil
}

// problemError turns a check the database made into its typed error.
func problemError(problem, opType string, occurred, latest time.Time, horizon *time.Time) error {
	switch problem {
	case "unknown_operation_type":
		return &UnknownOperationTypeError{Type: OperationType(opType)}
	case "future":
		return &TimeError{Kind: ErrFutureEvent, OccurredAt: occurred, Limit: latest}
	case "retained":
		var h time.Time
		if horizon != nil {
			h = *horizon
		}
		return &TimeError{Kind: ErrRetained, OccurredAt: occurred, Limit: h}
	}
	return fmt.Errorf("usage: the database refused the event: %s", problem)
}

// MaxBatchSize bounds the events of one RecordBatch.
const MaxBatchSize = 20000

// BatchResult says what became of a batch: how many events were new, how
// many were already recorded (in the workspace, or earlier in the batch)
// under the same key and request, and which were refused, each naming its
// event.
type BatchResult struct {
	Inserted   int           `json:"inserted"`
	Duplicates int           `json:"duplicates"`
	Rejected   []*EventError `json:"rejected,omitempty"`
}

// MarshalJSON writes the error as {"index", "key", "error"}.
func (e *EventError) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Index int    `json:"index"`
		Key   string `json:"key,omitempty"`
		Error string `json:"error"`
	}{e.Index, e.Key, e.Err.Error()})
}

// RecordBatch records many events in one statement and one round trip,
// deduplicated on their idempotency keys: an event whose key is already
// recorded, in the workspace or earlier in the batch, for the same
// request, is skipped and counted as a duplicate, never an error for the
// batch. An event that is invalid, of an unknown operation type, dated too
// far ahead or before the retention horizon, or whose key was used for a
// different request, is refused on its own (an *EventError in Rejected);
// the rest of the batch is recorded all the same.
//
// Events are inserted in idempotency key order, so that concurrent batches
// with overlapping keys queue rather than deadlock.
func (s *Service) RecordBatch(ctx context.Context, t *tenancy.Tenant, events []RecordParams) (BatchResult, error) {
	if err := usable(t); err != nil {
		return BatchResult{}, err
	}
	if len(events) > MaxBatchSize {
		return BatchResult{}, &tenancy.InvalidInputError{Field: "batch", Reason: fmt.Sprintf("has %d events; the limit is %d", len(events), MaxBatchSize)}
	}
	now := s.cfg.now()
	var res BatchResult
	batch := make([]indexed, 0, len(events))
	for i, p := range events {
		e, err := s.cfg.prepare(p, now)
		if err != nil {
			res.Rejected = append(res.Rejected, &EventError{Index: i, Key: p.IdempotencyKey, Err: err})
			continue
		}
		batch = append(batch, indexed{i, e})
	}
	if err := s.recordPrepared(ctx, t, batch, now, &res); err != nil {
		return BatchResult{}, err
	}
	return res, nil
}

// indexed is a prepared event and its place in the caller's batch.
type indexed struct {
	index int
	event prepared
}

// recordPrepared records checked events, adding to res. It reorders
// batch, which it owns from then on.
func (s *Service) recordPrepared(ctx context.Context, t *tenancy.Tenant, batch []indexed, now *time.Time, res *BatchResult) error {
	// A key twice in the batch: the first stands, the others are
	// duplicates or conflicts, found here rather than by the database.
	// The events kept are moved to the front of batch, in place, and the
	// map holds their positions there (an event is too large to copy into
	// a map cheaply).
	first := make(map[string]int, len(batch))
	kept := batch[:0]
	for i := range batch {
		b := batch[i]
		if b.event.key == "" {
			kept = append(kept, b)
			continue
		}
		if j, seen := first[b.event.key]; seen {
			f := &kept[j]
			if bytes.Equal(f.event.hash, b.event.hash) {
				res.Duplicates++
			} else {
				res.Rejected = append(res.Rejected, &EventError{Index: b.index, Key: b.event.key,
					Err: &IdempotencyConflictError{Key: b.event.key, Existing: fmt.Sprintf("event %d of the batch", f.index)}})
			}
			continue
		}
		first[b.event.key] = len(kept)
		kept = append(kept, b)
	}
	defer func() { slices.SortFunc(res.Rejected, func(a, b *EventError) int { return a.Index - b.Index }) }()
	if len(kept) == 0 {
		return nil
	}
	slices.SortStableFunc(kept, func(a, b indexed) int { return strings.Compare(a.event.key, b.event.key) })
	if s.viaUnnest {
		return s.recordUnnest(ctx, t, kept, now, res)
	}
	args := tenancy.Args{"now": now, "max_future": s.cfg.futureSkew}
	rows := stageRows(kept)
	// Most batches are new events: they are inserted without ON CONFLICT
	// (record_staged_new). If a key is taken, the statement fails, the
	// transaction is undone, and the batch is copied again and inserted
	// with ON CONFLICT (record_staged): a batch that repeats stored keys
	// pays one more copy, where a savepoint around the first insert would
	// cost every batch two more round trips.
	insert := stmtRecordStagedNew
	for {
		err := t.CopyInRows(ctx, eventsStage, rows, func(tx *tenancy.Tenant, copied int64) error {
			tag, err := exec(ctx, tx, insert, args)
			if err != nil {
				return err
			}
			res.Inserted += int(tag.RowsAffected())
			if tag.RowsAffected() == copied {
				return nil
			}
			left, err := query(ctx, tx, stmtRecordStagedReport, args)
			if err != nil {
				return err
			}
			_, err = s.report(left, kept, res)
			return err
		})
		var taken *tenancy.ConstraintError
		if insert == stmtRecordStagedNew && errors.As(err, &taken) && taken.Constraint == "usage_events_idempotency_key" {
			insert = stmtRecordStaged
			continue
		}
		if err != nil {
			return fmt.Errorf("usage: record batch: %w", err)
		}
		return nil
	}
}

// report reads the events a batch left out, by their position in kept
// (from 1): with their problem, or with the request hash and id of the
// stored event that holds their key. It returns how many it read.
func (s *Service) report(rows pgx.Rows, kept []indexed, res *BatchResult) (int, error) {
	var (
		pos         int64
		problem     *string
		occ, latest time.Time
		horizon     *time.Time
		storedHash  []byte
		storedID    pgtype.UUID
	)
	read := 0
	_, err := pgx.ForEachRow(rows, []any{&pos, &storedHash, &storedID, &problem, &occ, &latest, &horizon}, func() error {
		read++
		if pos < 1 || pos > int64(len(kept)) {
			return fmt.Errorf("the database reported event %d of %d", pos, len(kept))
		}
		b := kept[pos-1]
		e := b.event
		switch {
		case problem != nil:
			res.Rejected = append(res.Rejected, &EventError{Index: b.index, Key: e.key, Err: problemError(*problem, e.opType, occ, latest, horizon)})
		case storedHash == nil || bytes.Equal(storedHash, e.hash):
			// Its key is taken by the same request; or by an event since
			// deleted, which only a key could have kept out.
			res.Duplicates++
		default:
			res.Rejected = append(res.Rejected, &EventError{Index: b.index, Key: e.key,
				Err: &IdempotencyConflictError{Key: e.key, Existing: "event " + uuid.UUID(storedID.Bytes).String()}})
		}
		return nil
	})
	if err != nil {
		return read, err
	}
	return read, nil
}

// eventsStage is where a batch is copied before it is inserted; its
// columns are stageRows's values, in order.
var eventsStage = tenancy.DefineStage("usage_events",
	tenancy.StageColumn{Name: "pos", Type: "int4"}, tenancy.StageColumn{Name: "event_id", Type: "uuid"},
	tenancy.StageColumn{Name: "user_id", Type: "uuid"}, tenancy.StageColumn{Name: "operation_type", Type: "text"},
	tenancy.StageColumn{Name: "feature_key", Type: "text"}, tenancy.StageColumn{Name: "unit", Type: "text"},
	tenancy.StageColumn{Name: "quantity", Type: "int8"}, tenancy.StageColumn{Name: "credits", Type: "int8"},
	tenancy.StageColumn{Name: "price_credits", Type: "int8"}, tenancy.StageColumn{Name: "price_unit_quantity", Type: "int8"},
	tenancy.StageColumn{Name: "model", Type: "text"}, tenancy.StageColumn{Name: "status", Type: "text"},
	tenancy.StageColumn{Name: "duration_ms", Type: "int8"}, tenancy.StageColumn{Name: "metadata", Type: "jsonb"},
	tenancy.StageColumn{Name: "idempotency_key", Type: "text"}, tenancy.StageColumn{Name: "request_hash", Type: "bytea"},
	tenancy.StageColumn{Name: "ledger_entry_id", Type: "uuid"}, tenancy.StageColumn{Name: "occurred_at", Type: "timestamptz"},
)

// stageRows encodes events as rows of eventsStage, numbered from 1.
// Absent values are NULLs, which the statements fill with defaults.
func stageRows(events []indexed) *tenancy.StageRows {
	size := 0
	for i := range events {
		e := &events[i].event
		size += 200 + len(e.opType) + len(e.feature) + len(e.unit) + len(e.model) + len(e.metadata) + len(e.key)
	}
	r := eventsStage.NewRows(size)
	for i := range events {
		e := &events[i].event
		r.Int4(int32(i + 1))
		r.UUID(e.id)
		r.UUID(e.user)
		r.Text(e.opType)
		r.Text(e.feature)
		if e.unit != "" {
			r.Text(e.unit)
		} else {
			r.Null()
		}
		r.Int8(e.quantity)
		r.Int8(e.credits)
		r.Int8(e.price)
		r.Int8(e.perUnits)
		r.Text(e.model)
		r.Text(e.status)
		r.Int8(e.durationMs)
		if e.metadata != "" {
			r.JSONB(e.metadata)
		} else {
			r.Null()
		}
		if e.key != "" {
			r.Text(e.key)
			r.Bytea(e.hash)
		} else {
			r.Null()
			r.Null()
		}
		if e.ledger != uuid.Nil {
			r.UUID(e.ledger)
		} else {
			r.Null()
		}
		if !e.occurredAt.IsZero() {
			r.Timestamptz(e.occurredAt)
		} else {
			r.Null()
		}
	}
	return r
}

// recordUnnest records kept with one statement of arrays instead of the
// stage: the way BenchmarkIngest compares them.
func (s *Service) recordUnnest(ctx context.Context, t *tenancy.Tenant, kept []indexed, now *time.Time, res *BatchResult) error {
	n := len(kept)
	rows, err := query(ctx, t, stmtRecordUnnest, s.batchArgs(kept, now))
	if err != nil {
		return fmt.Errorf("usage: record batch: %w", err)
	}
	left, err := s.report(rows, kept, res)
	res.Inserted += n - left
	if err != nil {
		return fmt.Errorf("usage: record batch: %w", err)
	}
	return nil
}

// batchArgs are the arguments of record_unnest for events in the order
// they are to be inserted.
func (s *Service) batchArgs(kept []indexed, now *time.Time) tenancy.Args {
	n := len(kept)
	var (
		ids, users, ledgers               = make([]pgtype.UUID, n), make([]pgtype.UUID, n), make([]pgtype.UUID, n)
		opTypes, features, units, models  = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		statuses, metadata, keys          = make([]string, n), make([]string, n), make([]string, n)
		quantities, credits, prices, pers = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		durations                         = make([]int64, n)
		hashes                            = make([][]byte, n)
		occurred                          = make([]time.Time, n)
	)
	for i, b := range kept {
		e := b.event
		ids[i] = pgtype.UUID{Bytes: e.id, Valid: true}
		users[i] = pgtype.UUID{Bytes: e.user, Valid: true}
		ledgers[i] = pgtype.UUID{Bytes: e.ledger, Valid: true}
		opTypes[i], features[i], units[i], models[i] = e.opType, e.feature, e.unit, e.model
		statuses[i], metadata[i], keys[i] = e.status, e.metadata, e.key
		quantities[i], credits[i], prices[i], pers[i] = e.quantity, e.credits, e.price, e.perUnits
		durations[i], hashes[i], occurred[i] = e.durationMs, e.hash, e.occurredAt
		if hashes[i] == nil {
			hashes[i] = []byte{}
		}
	}
	return tenancy.Args{
		"event_ids": ids, "user_ids": users, "operation_types": opTypes, "feature_keys": features,
		"units": units, "quantities": quantities, "credits": credits, "price_credits": prices, "price_unit_quantities": pers,
		"models": models, "statuses": statuses, "durations_ms": durations, "metadata": metadata, "idempotency_keys": keys,
		"request_hashes": hashes, "ledger_entry_ids": ledgers, "occurred_ats": occurred,
		"now": now, "max_future": s.cfg.futureSkew,
	}
}

// eventRow scans an event whose columns may all be NULL (a left join that
// found none).
type eventRow struct {
	replay                                  pgtype.Bool
	id, user, ledger                        pgtype.UUID
	opType, feature, unit, model, status    pgtype.Text
	key                                     pgtype.Text
	quantity, credits, price, per, duration pgtype.Int8
	metadata                                []byte
	occurred, recorded, voided, updated     pgtype.Timestamptz
	version                                 pgtype.Int8
	hash                                    []byte
}

// dest lists the targets in the order of the statements' columns: replay,
// then the event as RETURNING writes it, then its request hash.
func (r *eventRow) dest() []any {
	return []any{&r.replay, &r.id, &r.user, &r.opType, &r.feature, &r.quantity, &r.unit, &r.credits, &r.price, &r.per,
		&r.model, &r.status, &r.duration, &r.metadata, &r.key, &r.ledger, &r.occurred, &r.recorded, &r.voided,
		&r.version, &r.updated, &r.hash}
}

func (r *eventRow) event(ws tenancy.WorkspaceID) Event {
	e := Event{
		ID: tenancy.IDFromUUID[eventKind](r.id.Bytes), WorkspaceID: ws, UserID: tenancy.UserIDFromUUID(r.user.Bytes),
		OperationType: OperationType(r.opType.String), FeatureKey: r.feature.String, Quantity: r.quantity.Int64,
		Unit: r.unit.String, Credits: r.credits.Int64, Price: Price{Credits: r.price.Int64, PerUnits: r.per.Int64},
		Model: r.model.String, Status: Status(r.status.String), DurationMs: r.duration.Int64,
		IdempotencyKey: r.key.String, OccurredAt: r.occurred.Time.UTC(), RecordedAt: r.recorded.Time.UTC(),
		Version: int(r.version.Int64), UpdatedAt: r.updated.Time.UTC(),
	}
	if r.ledger.Valid {
		e.LedgerEntryID = r.ledger.Bytes
	}
	if len(r.metadata) > 0 {
		e.Metadata = json.RawMessage(slices.Clone(r.metadata))
	}
	if r.voided.Valid {
		v := r.voided.Time.UTC()
		e.VoidedAt = &v
	}
	return e
}

func nullText(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullUUID(u uuid.UUID) *pgtype.UUID {
	if u == uuid.Nil {
		return nil
	}
	return &pgtype.UUID{Bytes: u, Valid: true}
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
