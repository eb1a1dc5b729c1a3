package usage

import (
	"errors"
	"fmt"
	"time"

	"github.com/meterbase/meterbase/tenancy"
)

var (
	// ErrUnknownOperationType matches every *UnknownOperationTypeError.
	ErrUnknownOperationType = errors.New("usage: unknown operation type")
	// ErrFutureEvent means an event is dated further ahead of now than
	// Config.MaxFutureSkew allows. It matches tenancy.ErrInvalidInput too.
	ErrFutureEvent = errors.New("usage: event dated in the future")
	// ErrRetained means an event is dated before the workspace's retention
	// horizon: its period's history was deleted, and with it the keys that
	// would recognise a retry. It matches tenancy.ErrInvalidInput too.
	ErrRetained = errors.New("usage: event dated before the retention horizon")
	// ErrIdempotencyConflict matches every *IdempotencyConflictError: a key
	// reused for a different request.
	ErrIdempotencyConflict = errors.New("usage: idempotency key reused for a different request")
	// ErrEventVoided means the event was voided: it can be neither voided
	// again nor corrected.
	ErrEventVoided = errors.New("usage: event is voided")
	// ErrRecorderFull means a Recorder holds as many events as it may; the
	// event was not accepted.
	ErrRecorderFull = errors.New("usage: recorder buffer is full")
	// ErrRecorderClosed means the Recorder was closed; the event was not
	// accepted.
	ErrRecorderClosed = errors.New("usage: recorder is closed")
	// ErrOperationTypeConflict matches every *OperationTypeConflictError.
	ErrOperationTypeConflict = errors.New("usage: operation type exists with another definition")
)

// UnknownOperationTypeError is an event whose operation type is not in
// operation_types.
type UnknownOperationTypeError struct{ Type OperationType }

func (e *UnknownOperationTypeError) Error() string {
	return fmt.Sprintf("usage: unknown operation type %q; register it with RegisterOperationTypes", string(e.Type))
}

// Is makes the error match ErrUnknownOperationType and
// tenancy.ErrInvalidInput.
func (e *UnknownOperationTypeError) Is(target error) bool {
	return target == ErrUnknownOperationType || target == tenancy.ErrInvalidInput
}

// TimeError is an event dated too far ahead (ErrFutureEvent) or before the
// retention horizon (ErrRetained).
type TimeError struct {
	Kind       error // ErrFutureEvent or ErrRetained
	OccurredAt time.Time
	Limit      time.Time // the latest, or earliest, time allowed
}

func (e *TimeError) Error() string {
	if e.Kind == ErrRetained {
		return fmt.Sprintf("%v: %s is before %s", e.Kind, e.OccurredAt.Format(time.RFC3339Nano), e.Limit.Format(time.RFC3339Nano))
	}
	return fmt.Sprintf("%v: %s is after %s", e.Kind, e.OccurredAt.Format(time.RFC3339Nano), e.Limit.Format(time.RFC3339Nano))
}

// Is makes the error match its Kind and tenancy.ErrInvalidInput.
func (e *TimeError) Is(target error) bool {
	return target == e.Kind || target == tenancy.ErrInvalidInput
}

// IdempotencyConflictError is a key already used, in this workspace, for a
// different request.
type IdempotencyConflictError struct {
	Key string
	// Existing is the id of what the key recorded first (an event, or an
	// adjustment), when it could be read.
	Existing string
}

func (e *IdempotencyConflictError) Error() string {
	if e.Existing != "" {
		return fmt.Sprintf("%v: key %q recorded %s", ErrIdempotencyConflict, e.Key, e.Existing)
	}
	return fmt.Sprintf("%v: key %q", ErrIdempotencyConflict, e.Key)
}

// Is makes the error match ErrIdempotencyConflict.
func (e *IdempotencyConflictError) Is(target error) bool { return target == ErrIdempotencyConflict }

// EventError is one event of a batch that was not recorded, and why. The
// rest of the batch is recorded all the same.
type EventError struct {
	Index int    // the event's position in the batch
	Key   string // its idempotency key, if any
	Err   error
}

func (e *EventError) Error() string {
	if e.Key != "" {
		return fmt.Sprintf("usage: event %d (key %q): %v", e.Index, e.Key, e.Err)
	}
	return fmt.Sprintf("usage: event %d: %v", e.Index, e.Err)
}

func (e *EventError) Unwrap() error { return e.Err }

// OperationTypeConflictError is an operation type registered before with
// another unit, or a built-in one.
type OperationTypeConflictError struct {
	Type   OperationType
	Reason string
}

func (e *OperationTypeConflictError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrOperationTypeConflict, string(e.Type), e.Reason)
}

// Is makes the error match ErrOperationTypeConflict.
func (e *OperationTypeConflictError) Is(target error) bool { return target == ErrOperationTypeConflict }

// UnwrittenError is what Recorder.Close returns when it could not write
// every event it had accepted before its context ended: the events are
// handed back, so that the host can keep them elsewhere.
type UnwrittenError struct {
	Events []Pending
	Err    error
}

func (e *UnwrittenError) Error() string {
	return fmt.Sprintf("usage: recorder closed with %d event(s) unwritten: %v", len(e.Events), e.Err)
}

func (e *UnwrittenError) Unwrap() error { return e.Err }
