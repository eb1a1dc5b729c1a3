package credits

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meterbase/meterbase/tenancy"
)

var (
	// ErrNotFound matches every *NotFoundError: the account, grant, hold or
	// entry does not exist in this tenant (it may exist in another, which
	// is the same thing to the caller). errors.Is(err, tenancy.ErrNotFound)
	// holds too.
	ErrNotFound = errors.New("credits: not found")
	// ErrInsufficientCredits matches every *InsufficientCreditsError.
	ErrInsufficientCredits = errors.New("credits: insufficient credits")
	// ErrIdempotencyConflict matches every *IdempotencyConflictError.
	ErrIdempotencyConflict = errors.New("credits: idempotency key reused for another request")
	// ErrHoldResolved matches every *HoldStateError: the hold has resolved
	// already, and each way it can have resolved has a sentinel of its own.
	ErrHoldResolved = errors.New("credits: the hold has resolved already")
	ErrHoldCaptured = errors.New("credits: the hold was captured already")
	ErrHoldReleased = errors.New("credits: the hold was released already")
	ErrHoldExpired  = errors.New("credits: the hold has expired")
	// ErrRefundExceeds matches every *RefundExceedsError.
	ErrRefundExceeds = errors.New("credits: refund above what is left to refund")
	// ErrNotRefundable means the entry is not a spend or a capture.
	ErrNotRefundable = errors.New("credits: only a spend or a capture can be refunded")
	// ErrInvalidInput is tenancy's: every *tenancy.InvalidInputError and
	// *tenancy.InvalidIDError matches it. Bad input is refused before any
	// SQL is sent, except what only the database can judge (a grant that
	// would expire before the database's now, say).
	ErrInvalidInput = tenancy.ErrInvalidInput
	// ErrNotMember is tenancy's: the user is not a member of the workspace.
	ErrNotMember = tenancy.ErrNotMember
	// ErrOutcomeUnknown matches every *OutcomeUnknownError.
	ErrOutcomeUnknown = errors.New("credits: outcome unknown; retry with the same key")
)

// OutcomeUnknownError is a state change that was sent but whose answer
// never came: the caller's context ended while it was in flight, or the
// connection was lost. It may have been applied or not. Retry it with the
// same key and the same parameters: the ledger applies a key once, so the
// retry either applies it or returns what the first attempt did (Replay
// set). Err is the cause (errors.Is(err, context.Canceled) holds when the
// context ended). A call that could not connect sent nothing: its error
// is the connection's (a *pgconn.ConnectError), not this one, unless it
// ran alone after a batch that carried it failed, having perhaps
// committed.
type OutcomeUnknownError struct {
	Operation string // "spend", "hold", "capture", "release", ...
	Key       string
	Err       error
}

func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("credits: %s with key %q: outcome unknown (%v); retry with the same key", e.Operation, e.Key, e.Err)
}

func (e *OutcomeUnknownError) Is(target error) bool { return target == ErrOutcomeUnknown }

func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// changeError maps the error of a keyed state change: as mapError does,
// and as an *OutcomeUnknownError when the change may have committed.
func changeError(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if outcomeUnknown(err) {
		return &OutcomeUnknownError{Operation: op, Key: key, Err: err}
	}
	return mapError(op, err)
}

// NotFoundError names what was not found.
type NotFoundError struct {
	What string // "account", "grant", "hold" or "entry"
	ID   string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("credits: no such %s %s in this workspace", e.What, e.ID)
}

// Is makes a NotFoundError match ErrNotFound and tenancy.ErrNotFound.
func (e *NotFoundError) Is(target error) bool {
	return target == ErrNotFound || target == tenancy.ErrNotFound
}

// InsufficientCreditsError is a spend, hold or capture refused whole: the
// account could give Available credits, Requested were asked for.
// Available counts, for a spend, the spendable lots and the overdraft left
// (the credit limit less the debt); for a hold, the spendable lots only;
// for a capture, the held amount, the spendable lots and the overdraft left.
type InsufficientCreditsError struct {
	Available int64 `json:"available"`
	Requested int64 `json:"requested"`
}

func (e *InsufficientCreditsError) Error() string {
	return fmt.Sprintf("credits: insufficient credits: %d requested, %d available", e.Requested, e.Available)
}

func (e *InsufficientCreditsError) Is(target error) bool { return target == ErrInsufficientCredits }

// IdempotencyConflictError is a key used before for a different request
// (another operation, or the same one with other parameters).
type IdempotencyConflictError struct {
	Key       string `json:"key"`
	Operation string `json:"operation"` // the operation the key was first used for
}

func (e *IdempotencyConflictError) Error() string {
	return fmt.Sprintf("credits: idempotency key %q was used for another request (%s)", e.Key, e.Operation)
}

func (e *IdempotencyConflictError) Is(target error) bool { return target == ErrIdempotencyConflict }

// HoldStateError is a capture or release of a hold that has resolved
// already: State says how.
type HoldStateError struct {
	Hold  HoldID
	State HoldState
}

func (e *HoldStateError) Error() string {
	switch e.State {
	case HoldCaptured:
		return fmt.Sprintf("credits: hold %s was captured already", e.Hold)
	case HoldReleased:
		return fmt.Sprintf("credits: hold %s was released already", e.Hold)
	default:
		return fmt.Sprintf("credits: hold %s has expired", e.Hold)
	}
}

func (e *HoldStateError) Is(target error) bool {
	switch target {
	case ErrHoldResolved:
		return true
	case ErrHoldCaptured:
		return e.State == HoldCaptured
	case ErrHoldReleased:
		return e.State == HoldReleased
	case ErrHoldExpired:
		return e.State == HoldExpired
	}
	return false
}

// RefundExceedsError is a refund of more than is left to refund of the
// entry.
type RefundExceedsError struct {
	Refundable int64 `json:"refundable"`
	Requested  int64 `json:"requested"`
}

func (e *RefundExceedsError) Error() string {
	return fmt.Sprintf("credits: refund of %d asked, %d left to refund", e.Requested, e.Refundable)
}

func (e *RefundExceedsError) Is(target error) bool { return target == ErrRefundExceeds }

// The SQLSTATEs the ledger's functions raise (the migration lists them),
// each with its figures as JSON in the error's DETAIL.
const (
	codeInsufficient  = "MB101"
	codeConflict      = "MB102"
	codeNotFound      = "MB103"
	codeCaptured      = "MB104"
	codeReleased      = "MB105"
	codeExpired       = "MB106"
	codeRefundExceeds = "MB107"
	codeInvalid       = "MB108"
	codeNotMember     = "MB109"
	codeNotRefundable = "MB110"
)

// mapError translates the functions' errors into the package's: the one
// place that knows their SQLSTATEs. Anything else (a lost connection, a
// cancelled context, a serialization failure in the host's transaction) is
// wrapped as it is.
func mapError(op string, err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "credit_idempotency_pkey" {
		// The spend records its key with a plain INSERT: a violation is
		// the same key used at the same moment for another request.
		return &IdempotencyConflictError{Key: keyOf(pgErr.Detail), Operation: "a concurrent request"}
	}
	if !errors.As(err, &pgErr) {
		if errors.Is(err, tenancy.ErrNotFound) {
			return err
		}
		return fmt.Errorf("credits: %s: %w", op, err)
	}
	detail := []byte(pgErr.Detail)
	decode := func(v any) error {
		if jerr := json.Unmarshal(detail, v); jerr != nil {
			return fmt.Errorf("credits: %s: %w (undecodable detail: %v)", op, err, jerr)
		}
		return nil
	}
	switch pgErr.Code {
	case codeInsufficient:
		e := &InsufficientCreditsError{}
		if derr := decode(e); derr != nil {
			return derr
		}
		return e
	case codeConflict:
		e := &IdempotencyConflictError{}
		if derr := decode(e); derr != nil {
			return derr
		}
		return e
	case codeNotFound:
		var d struct{ What, ID string }
		if derr := decode(&d); derr != nil {
			return derr
		}
		return &NotFoundError{What: d.What, ID: d.ID}
	case codeCaptured, codeReleased, codeExpired:
		var d struct {
			HoldID HoldID `json:"holdId"`
		}
		if derr := decode(&d); derr != nil {
			return derr
		}
		state := map[string]HoldState{codeCaptured: HoldCaptured, codeReleased: HoldReleased, codeExpired: HoldExpired}[pgErr.Code]
		return &HoldStateError{Hold: d.HoldID, State: state}
	case codeRefundExceeds:
		e := &RefundExceedsError{}
		if derr := decode(e); derr != nil {
			return derr
		}
		return e
	case codeInvalid:
		var d struct{ Field, Reason string }
		if derr := decode(&d); derr != nil {
			return derr
		}
		return &tenancy.InvalidInputError{Field: d.Field, Reason: d.Reason}
	case codeNotMember:
		return fmt.Errorf("credits: %s: %w", op, tenancy.ErrNotMember)
	case codeNotRefundable:
		var d struct {
			EntryID string `json:"entryId"`
			Kind    string `json:"kind"`
		}
		if derr := decode(&d); derr != nil {
			return derr
		}
		return fmt.Errorf("%w: entry %s is a %s", ErrNotRefundable, d.EntryID, d.Kind)
	}
	return fmt.Errorf("credits: %s: %w", op, err)
}

// keyOf reads the key out of a unique violation's detail: Key (workspace_id,
// key)=(<uuid>, <key>) already exists.
func keyOf(detail string) string {
	_, rest, ok := strings.Cut(detail, ")=(")
	if !ok {
		return ""
	}
	_, key, ok := strings.Cut(rest, ", ")
	if !ok {
		return ""
	}
	return strings.TrimSuffix(key, ") already exists.")
}
