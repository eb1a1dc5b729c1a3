package credits

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/meterbase/meterbase/tenancy"
)

//go:embed sql/*.sql
var sqlFiles embed.FS

// The ledger's tables, for the tenant handle.
var (
	accountsTable   = tenancy.DefineTable("credit_accounts", tenancy.WorkspaceScoped)
	grantsTable     = tenancy.DefineTable("credit_grants", tenancy.WorkspaceScoped)
	holdsTable      = tenancy.DefineTable("credit_holds", tenancy.WorkspaceScoped)
	holdLotsTable   = tenancy.DefineTable("credit_hold_lots", tenancy.WorkspaceScoped)
	entriesTable    = tenancy.DefineTable("credit_entries", tenancy.WorkspaceScoped)
	entryLotsTable  = tenancy.DefineTable("credit_entry_lots", tenancy.WorkspaceScoped)
	idempotentTable = tenancy.DefineTable("credit_idempotency", tenancy.WorkspaceScoped)
)

// statements are the package's hand-written SQL, prepared once at load.
var statements = tenancy.MustPrepareFS(sqlFiles, "sql")

func statement(name string) *tenancy.Statement {
	s, ok := statements[name]
	if !ok {
		panic("credits: no statement " + name)
	}
	return s
}

var (
	stmtOpenAccount = statement("open_account")
	stmtSetLimit    = statement("set_limit")
	stmtGrant       = statement("grant")
	stmtSpend       = statement("spend")
	stmtHold        = statement("hold")
	stmtCapture     = statement("capture")
	stmtRelease     = statement("release")
	stmtRefund      = statement("refund")
	stmtVoid        = statement("void")
	stmtSweep       = statement("sweep")
)

// Ledger is the credit ledger's repository. Make it once with New and
// share it; every method takes the tenant it acts for, and is safe for
// concurrent use.
type Ledger struct {
	cfg Config
	co  *coalescer
}

// New returns the ledger. A nil cfg means the defaults.
func New(cfg *Config) *Ledger {
	l := &Ledger{}
	if cfg != nil {
		l.cfg = *cfg
	}
	l.co = newCoalescer(l)
	return l
}

// call runs one of the ledger's functions and decodes its JSON result.
func (l *Ledger) call(ctx context.Context, t *tenancy.Tenant, op string, s *tenancy.Statement, args tenancy.Args, out any) error {
	return queryResult(ctx, t, op, s, args, out, func(err error) error { return mapError(op, err) })
}

// change runs one of the ledger's keyed state changes, as call does; an
// error after which it may have committed is an *OutcomeUnknownError.
func (l *Ledger) change(ctx context.Context, t *tenancy.Tenant, op, key string, s *tenancy.Statement, args tenancy.Args, out any) error {
	return queryResult(ctx, t, op, s, args, out, func(err error) error { return changeError(op, key, err) })
}

// queryResult runs a statement whose one row is a JSON result, and decodes
// it into out; mapErr translates the statement's error.
func queryResult(ctx context.Context, t *tenancy.Tenant, op string, s *tenancy.Statement, args tenancy.Args, out any, mapErr func(error) error) error {
	var raw []byte
	if err := t.QueryRow(ctx, s, args).Scan(&raw); err != nil {
		return mapErr(err)
	}
	return decodeResult(op, raw, out)
}

func decodeResult(op string, raw []byte, out any) error {
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("credits: %s: decode result: %w", op, err)
	}
	return nil
}

// OpenAccountParams says whose account to open.
type OpenAccountParams struct {
	// User is the member whose own account it is; zero opens the
	// workspace's shared pool.
	User tenancy.UserID
	// CreditLimit is the overdraft allowed (0, strict, by default); it
	// applies when the account is created, not to one that exists.
	CreditLimit int64
}

// OpenAccountResult is the account, and whether this call created it.
type OpenAccountResult struct {
	Account
	Created bool `json:"created"`
}

// OpenAccount returns the workspace's shared pool or a member's account,
// creating it if it does not exist yet: calling it again is harmless.
// ErrNotMember if the user is not a member of the workspace.
func (l *Ledger) OpenAccount(ctx context.Context, t *tenancy.Tenant, p OpenAccountParams) (OpenAccountResult, error) {
	if p.CreditLimit < 0 || p.CreditLimit > MaxAmount {
		return OpenAccountResult{}, invalid("credit limit", "%d is not between 0 and %d", p.CreditLimit, int64(MaxAmount))
	}
	var member *uuid.UUID
	if !p.User.IsZero() {
		u := p.User.UUID()
		member = &u
	}
	var res OpenAccountResult
	err := l.call(ctx, t, "open account", stmtOpenAccount, tenancy.Args{
		"account": tenancy.NewID[accountKind](), "member": member, "credit_limit": p.CreditLimit, "now": l.now(),
	}, &res)
	return res, err
}

// SetCreditLimitParams sets an account's overdraft limit.
type SetCreditLimitParams struct {
	Account     AccountID
	CreditLimit int64 // 0 is strict
}

// SetCreditLimit changes an account's overdraft limit. A limit below the
// debt in use is allowed: spends then take only from lots until the debt
// is back under it.
func (l *Ledger) SetCreditLimit(ctx context.Context, t *tenancy.Tenant, p SetCreditLimitParams) (Account, error) {
	if err := checkID(p.Account); err != nil {
		return Account{}, err
	}
	if p.CreditLimit < 0 || p.CreditLimit > MaxAmount {
		return Account{}, invalid("credit limit", "%d is not between 0 and %d", p.CreditLimit, int64(MaxAmount))
	}
	var a Account
	err := l.call(ctx, t, "set credit limit", stmtSetLimit, tenancy.Args{
		"account": p.Account, "credit_limit": p.CreditLimit, "now": l.now(),
	}, &a)
	return a, err
}

// GrantParams describes a grant: a lot of credits added to an account.
type GrantParams struct {
	Account AccountID
	Amount  int64 // 1..MaxAmount
	// Priority orders lots for spending: lower burns first (promotional
	// credits before purchased ones, say). Within a priority, the lot that
	// expires first burns first (lots without expiry last), then the
	// oldest, then by id.
	Priority int
	// EffectiveAt is when the credits can be spent; zero or past means
	// now (a grant never takes effect before it is made).
	EffectiveAt time.Time
	// ExpiresAt is when its unspent credits expire; zero means never.
	ExpiresAt time.Time
	Category  Category
	// Metadata is the host's, a JSON object of at most MaxMetadataBytes.
	Metadata  json.RawMessage
	Reference string // what the credits are for (an invoice, say); optional
	Key       string // idempotency key, required
}

// GrantResult is the lot made, and its grant entry: nil for a grant that
// takes effect later (the entry is written when it does).
type GrantResult struct {
	Grant  Grant  `json:"grant"`
	Entry  *Entry `json:"entry,omitempty"`
	Replay bool   `json:"replay"`
}

// Grant adds a lot of credits. A grant effective now first pays the
// account's debt, if any (its lot keeps the rest); a scheduled grant
// does the same when it takes effect.
func (l *Ledger) Grant(ctx context.Context, t *tenancy.Tenant, p GrantParams) (GrantResult, error) {
	if err := checkID(p.Account); err != nil {
		return GrantResult{}, err
	}
	if err := checkAmount("amount", p.Amount); err != nil {
		return GrantResult{}, err
	}
	if p.Priority < -1<<31 || p.Priority > 1<<31-1 {
		return GrantResult{}, invalid("priority", "%d is outside the 32-bit range", p.Priority)
	}
	if err := checkCategory(p.Category); err != nil {
		return GrantResult{}, err
	}
	meta, err := normalizeMetadata(p.Metadata)
	if err != nil {
		return GrantResult{}, err
	}
	if err := checkText("reference", p.Reference, MaxReferenceBytes); err != nil {
		return GrantResult{}, err
	}
	if err := checkKey(p.Key); err != nil {
		return GrantResult{}, err
	}
	effective, expires := optionalTime(p.EffectiveAt), optionalTime(p.ExpiresAt)
	if expires != nil && effective != nil && !expires.After(*effective) {
		return GrantResult{}, invalid("expiresAt", "is not after effectiveAt")
	}
	hash := newRequest("grant").id(p.Account.UUID()).int(p.Amount).int(int64(p.Priority)).
		time(p.EffectiveAt.Truncate(time.Microsecond)).time(p.ExpiresAt.Truncate(time.Microsecond)).
		str(string(p.Category)).str(string(meta)).str(p.Reference).sum()
	var res GrantResult
	err = l.change(ctx, t, "grant", p.Key, stmtGrant, tenancy.Args{
		"account": p.Account, "amount": p.Amount, "priority": int64(p.Priority),
		"effective_at": effective, "expires_at": expires, "category": string(p.Category),
		"metadata": string(meta), "reference": p.Reference, "key": p.Key, "request_hash": hash, "now": l.now(),
	}, &res)
	normalizeGrant(&res.Grant)
	return res, err
}

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC().Truncate(time.Microsecond)
	return &u
}

// SpendParams describes a spend.
type SpendParams struct {
	Account   AccountID
	Amount    int64  // 1..MaxAmount
	Reference string // what the credits paid for; optional
	Key       string // idempotency key, required
}

// SpendResult is the spend's journal entry, with its per-lot trace.
type SpendResult struct {
	Entry  Entry `json:"entry"`
	Replay bool  `json:"replay"`
}

// Spend takes Amount credits from the account, whole or not at all: from
// its spendable lots in burn order, then what they lack as debt within the
// account's credit limit. Otherwise nothing changes and the error is an
// *InsufficientCreditsError. It is one statement: the account's row is
// locked only while it runs. A refusal is not recorded under the key: a
// retry is judged again.
func (l *Ledger) Spend(ctx context.Context, t *tenancy.Tenant, p SpendParams) (SpendResult, error) {
	if err := checkID(p.Account); err != nil {
		return SpendResult{}, err
	}
	if err := checkAmount("amount", p.Amount); err != nil {
		return SpendResult{}, err
	}
	if err := checkText("reference", p.Reference, MaxReferenceBytes); err != nil {
		return SpendResult{}, err
	}
	if err := checkKey(p.Key); err != nil {
		return SpendResult{}, err
	}
	hash := p.hash()
	var res SpendResult
	out, err := l.co.do(ctx, t, p.operation(hash), func() (err error) {
		res, err = l.spendAlone(ctx, t, p, hash)
		return err
	})
	if err != nil || out == nil {
		return res, err
	}
	return out.spend(p.Account)
}

// spendAlone is a spend as a single call. It answers with a row, not
// JSON: it is the hot path.
func (l *Ledger) spendAlone(ctx context.Context, t *tenancy.Tenant, p SpendParams, hash []byte) (SpendResult, error) {
	var res SpendResult
	var id uuid.UUID
	var seq, debtDelta, balanceAfter, heldAfter, debtAfter, amount int64
	var reference string
	var effectiveAt, recordedAt time.Time
	var lotIDs []uuid.UUID
	var lotAmounts []int64
	var lotCategories []string
	err := t.QueryRow(ctx, stmtSpend, tenancy.Args{
		"account": p.Account, "amount": p.Amount, "reference": p.Reference,
		"key": p.Key, "request_hash": hash, "now": l.now(),
	}).Scan(&id, &seq, &debtDelta, &balanceAfter, &heldAfter, &debtAfter, &reference,
		&effectiveAt, &recordedAt, &lotIDs, &lotAmounts, &lotCategories, &amount, &res.Replay)
	if err != nil {
		return SpendResult{}, changeError("spend", p.Key, err)
	}
	res.Entry = spendEntry(p.Account, id, seq, debtDelta, balanceAfter, heldAfter, debtAfter, reference,
		effectiveAt, recordedAt, lotIDs, lotAmounts, lotCategories, amount)
	return res, nil
}

func spendEntry(account AccountID, id uuid.UUID, seq, debtDelta, balanceAfter, heldAfter, debtAfter int64, reference string,
	effectiveAt, recordedAt time.Time, lotIDs []uuid.UUID, lotAmounts []int64, lotCategories []string, amount int64) Entry {
	e := Entry{ID: tenancy.IDFromUUID[entryKind](id), AccountID: account, Seq: seq, Kind: EntrySpend, Amount: -amount,
		DebtDelta: debtDelta, BalanceAfter: balanceAfter, HeldAfter: heldAfter, DebtAfter: debtAfter,
		Reference: reference, EffectiveAt: effectiveAt.UTC(), RecordedAt: recordedAt.UTC()}
	for i, id := range lotIDs {
		e.Lots = append(e.Lots, EntryLot{GrantID: tenancy.IDFromUUID[grantKind](id), Amount: lotAmounts[i], Category: Category(lotCategories[i])})
	}
	return e
}

// HoldParams describes a hold.
type HoldParams struct {
	Account   AccountID
	Amount    int64         // 1..MaxAmount
	TTL       time.Duration // 1ms..MaxHoldTTL; it expires then unless resolved
	Reference string        // what it reserves for; optional
	Key       string        // idempotency key, required
}

// HoldResult is the hold made and its journal entry.
type HoldResult struct {
	Hold   Hold  `json:"hold"`
	Entry  Entry `json:"entry"`
	Replay bool  `json:"replay"`
}

// Hold reserves Amount credits until now + TTL, earmarking the account's
// spendable lots in burn order, or fails at once with an
// *InsufficientCreditsError. A hold earmarks real credits: the overdraft
// does not cover it (it covers a capture beyond the held amount).
func (l *Ledger) Hold(ctx context.Context, t *tenancy.Tenant, p HoldParams) (HoldResult, error) {
	if err := checkID(p.Account); err != nil {
		return HoldResult{}, err
	}
	if err := checkAmount("amount", p.Amount); err != nil {
		return HoldResult{}, err
	}
	if p.TTL < time.Millisecond || p.TTL > MaxHoldTTL {
		return HoldResult{}, invalid("ttl", "%s is not between 1ms and %s", p.TTL, MaxHoldTTL)
	}
	if err := checkText("reference", p.Reference, MaxReferenceBytes); err != nil {
		return HoldResult{}, err
	}
	if err := checkKey(p.Key); err != nil {
		return HoldResult{}, err
	}
	ttl := p.TTL.Microseconds()
	hash := p.hash()
	res, err := coalescedChange[HoldResult](ctx, l, t, p.operation(hash), stmtHold, func() tenancy.Args {
		return tenancy.Args{
			"account": p.Account, "amount": p.Amount, "ttl_us": ttl, "reference": p.Reference,
			"key": p.Key, "request_hash": hash, "now": l.now(),
		}
	})
	if err != nil {
		return HoldResult{}, err
	}
	l.co.rememberHold(t, res.Hold.ID, p.Account)
	return res, nil
}

// coalescedChange runs a hold, capture or release (op) through the
// coalescer: its outcome in a batch, or, alone, s with args() decoded
// as change does.
func coalescedChange[T any](ctx context.Context, l *Ledger, t *tenancy.Tenant, op *operation, s *tenancy.Statement, args func() tenancy.Args) (T, error) {
	var res T
	out, err := l.co.do(ctx, t, op, func() error {
		return l.change(ctx, t, op.kind, op.key, s, args(), &res)
	})
	if err == nil && out != nil {
		err = out.decode(op.kind, &res)
	}
	if err != nil {
		var zero T
		return zero, err
	}
	return res, nil
}

// CaptureParams describes a capture.
type CaptureParams struct {
	Hold      HoldID
	Amount    int64  // 1..MaxAmount; more than held is allowed (see Capture)
	Reference string // what the credits paid for; default the hold's
	Key       string // idempotency key, required
}

// CaptureResult is the hold, resolved, and its capture entry. Also holds
// the entries of credits that the capture released into lots that have
// expired or been voided since, and that ended there at once.
type CaptureResult struct {
	Hold   Hold    `json:"hold"`
	Entry  Entry   `json:"entry"`
	Also   []Entry `json:"also,omitempty"`
	Replay bool    `json:"replay"`
}

// Capture spends from a hold. Up to the held amount, it takes from the
// lots the hold earmarked (even one that expired meanwhile: the hold
// protected it) and releases the rest. More than held takes the extra from
// the spendable lots, then debt within the credit limit; if the account
// cannot give it, nothing happens (*InsufficientCreditsError) and the hold
// stays as it was. A hold resolves once: a capture of a captured,
// released or expired hold fails with ErrHoldCaptured, ErrHoldReleased or
// ErrHoldExpired (a *HoldStateError), unless it is a retry with the same
// key, which returns the first result.
func (l *Ledger) Capture(ctx context.Context, t *tenancy.Tenant, p CaptureParams) (CaptureResult, error) {
	if err := checkID(p.Hold); err != nil {
		return CaptureResult{}, err
	}
	if err := checkAmount("amount", p.Amount); err != nil {
		return CaptureResult{}, err
	}
	if err := checkText("reference", p.Reference, MaxReferenceBytes); err != nil {
		return CaptureResult{}, err
	}
	if err := checkKey(p.Key); err != nil {
		return CaptureResult{}, err
	}
	hash := p.hash()
	op := p.operation(hash)
	op.account = l.co.holdAccount(t, p.Hold)
	return coalescedChange[CaptureResult](ctx, l, t, op, stmtCapture, func() tenancy.Args {
		return tenancy.Args{
			"hold": p.Hold, "amount": p.Amount, "reference": p.Reference,
			"key": p.Key, "request_hash": hash, "now": l.now(),
		}
	})
}

// ReleaseParams describes a release.
type ReleaseParams struct {
	Hold HoldID
	Key  string // idempotency key, required
}

// ReleaseResult is the hold, released, and its release entry; Also as in
// CaptureResult.
type ReleaseResult struct {
	Hold   Hold    `json:"hold"`
	Entry  Entry   `json:"entry"`
	Also   []Entry `json:"also,omitempty"`
	Replay bool    `json:"replay"`
}

// Release gives a hold's credits back to the lots it earmarked; credits of
// a lot that has expired or been voided since end at once. A hold that has
// resolved already gives a *HoldStateError, as in Capture.
func (l *Ledger) Release(ctx context.Context, t *tenancy.Tenant, p ReleaseParams) (ReleaseResult, error) {
	if err := checkID(p.Hold); err != nil {
		return ReleaseResult{}, err
	}
	if err := checkKey(p.Key); err != nil {
		return ReleaseResult{}, err
	}
	hash := p.hash()
	op := p.operation(hash)
	op.account = l.co.holdAccount(t, p.Hold)
	return coalescedChange[ReleaseResult](ctx, l, t, op, stmtRelease, func() tenancy.Args {
		return tenancy.Args{"hold": p.Hold, "key": p.Key, "request_hash": hash, "now": l.now()}
	})
}

// RefundParams describes a refund.
type RefundParams struct {
	// Entry is the spend or capture to give back (part of).
	Entry     EntryID
	Amount    int64  // 1..what is left to refund of it
	Reference string // why; optional
	Key       string // idempotency key, required
}

// RefundResult is the refund's journal entry, with the lots it gave back
// to; Also holds the entries of credits that ended at once, their lot
// having expired or been voided since.
type RefundResult struct {
	Entry  Entry   `json:"entry"`
	Also   []Entry `json:"also,omitempty"`
	Replay bool    `json:"replay"`
}

// Refund gives back all or part of a spend or capture, never more than is
// left to refund of it (*RefundExceedsError). It goes back in reverse
// burn order: first the part that was taken as debt, which pays the debt
// back (what the account no longer owes, a grant having paid it since,
// comes back as a new lot of category refund, without expiry), then the
// lots, the last one taken first. Credits given back to a lot that has
// expired or been voided since end again at once; both entries are in
// the journal. ErrNotRefundable for an entry that is not a spend or
// capture.
func (l *Ledger) Refund(ctx context.Context, t *tenancy.Tenant, p RefundParams) (RefundResult, error) {
	if err := checkID(p.Entry); err != nil {
		return RefundResult{}, err
	}
	if err := checkAmount("amount", p.Amount); err != nil {
		return RefundResult{}, err
	}
	if err := checkText("reference", p.Reference, MaxReferenceBytes); err != nil {
		return RefundResult{}, err
	}
	if err := checkKey(p.Key); err != nil {
		return RefundResult{}, err
	}
	hash := newRequest("refund").id(p.Entry.UUID()).int(p.Amount).str(p.Reference).sum()
	var res RefundResult
	err := l.change(ctx, t, "refund", p.Key, stmtRefund, tenancy.Args{
		"entry": p.Entry, "amount": p.Amount, "reference": p.Reference,
		"key": p.Key, "request_hash": hash, "now": l.now(),
	}, &res)
	return res, err
}

// VoidParams describes a void.
type VoidParams struct {
	Grant GrantID
	Key   string // idempotency key, required
}

// VoidResult is the lot, voided, and the void entry of its unheld credits
// (nil when it had none).
type VoidResult struct {
	Grant  Grant  `json:"grant"`
	Entry  *Entry `json:"entry,omitempty"`
	Replay bool   `json:"replay"`
}

// Void ends what is left of a grant: its unheld credits now, and those a
// hold earmarks when the hold lets them go (a capture still takes them).
// What was spent stays spent, and the history stays. Voiding a voided
// grant changes nothing.
func (l *Ledger) Void(ctx context.Context, t *tenancy.Tenant, p VoidParams) (VoidResult, error) {
	if err := checkID(p.Grant); err != nil {
		return VoidResult{}, err
	}
	if err := checkKey(p.Key); err != nil {
		return VoidResult{}, err
	}
	hash := newRequest("void").id(p.Grant.UUID()).sum()
	var res VoidResult
	err := l.change(ctx, t, "void", p.Key, stmtVoid, tenancy.Args{
		"grant": p.Grant, "key": p.Key, "request_hash": hash, "now": l.now(),
	}, &res)
	normalizeGrant(&res.Grant)
	return res, err
}

// SweepParams says what to sweep.
type SweepParams struct {
	Account AccountID // zero: every account of the workspace
	Limit   int       // accounts per call; default 100, at most 1000
}

// SweepResult says what a sweep did.
type SweepResult struct {
	Accounts int `json:"accounts"` // accounts settled
	Entries  int `json:"entries"`  // journal entries written
}

// Sweep writes into the journal the time-driven changes of accounts that
// have some due (holds and lots that expired, scheduled grants that took
// effect), each entry effective when the change happened. It changes no
// balance: reads compute the same at read time, and every write settles
// its account first. Run it from a periodic job, until it returns fewer
// accounts than Limit. Accounts that another transaction is writing are
// skipped (that write settles them).
func (l *Ledger) Sweep(ctx context.Context, t *tenancy.Tenant, p SweepParams) (SweepResult, error) {
	limit := p.Limit
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > 1000:
		return SweepResult{}, invalid("limit", "%d is not between 1 and 1000", limit)
	}
	var account *uuid.UUID
	if !p.Account.IsZero() {
		u := p.Account.UUID()
		account = &u
	}
	var res SweepResult
	err := l.call(ctx, t, "sweep", stmtSweep, tenancy.Args{
		"account": account, "limit": int32(limit), "now": l.now(),
	}, &res)
	return res, err
}

// The requests' hashes, by which a retry is told from another use of its
// key.
func (p SpendParams) hash() []byte {
	return newRequest("spend").id(p.Account.UUID()).int(p.Amount).str(p.Reference).sum()
}

func (p HoldParams) hash() []byte {
	return newRequest("hold").id(p.Account.UUID()).int(p.Amount).int(p.TTL.Microseconds()).str(p.Reference).sum()
}

func (p CaptureParams) hash() []byte {
	return newRequest("capture").id(p.Hold.UUID()).int(p.Amount).str(p.Reference).sum()
}

func (p ReleaseParams) hash() []byte { return newRequest("release").id(p.Hold.UUID()).sum() }

// The requests as the coalescer sends them. A capture's or release's
// account is its hold's, which the caller looks up.
func (p SpendParams) operation(hash []byte) *operation {
	return &operation{kind: "spend", account: p.Account.UUID(), amount: p.Amount, reference: p.Reference, key: p.Key, hash: hash}
}

func (p HoldParams) operation(hash []byte) *operation {
	return &operation{kind: "hold", account: p.Account.UUID(), amount: p.Amount, ttlUS: p.TTL.Microseconds(),
		reference: p.Reference, key: p.Key, hash: hash}
}

func (p CaptureParams) operation(hash []byte) *operation {
	return &operation{kind: "capture", hold: p.Hold.UUID(), amount: p.Amount, reference: p.Reference, key: p.Key, hash: hash}
}

func (p ReleaseParams) operation(hash []byte) *operation {
	return &operation{kind: "release", hold: p.Hold.UUID(), key: p.Key, hash: hash}
}
