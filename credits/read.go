package credits

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/meterbase/meterbase/tenancy"
)

var (
	stmtBalances      = statement("balances")
	stmtAccounts      = statement("accounts")
	stmtCountAccounts = statement("count_accounts")
	stmtAccount       = statement("account")
	stmtGetGrant      = statement("get_grant")
	stmtGetHold       = statement("get_hold")
	stmtGetEntry      = statement("get_entry")
	stmtJournal       = statement("journal")
	stmtReconcile     = statement("reconcile")
)

// readAt is the instant a read is made at: the clock's, or nil for the
// database's now().
func (l *Ledger) readAt() *time.Time { return l.now() }

// GetAccount returns an account, or ErrNotFound.
func (l *Ledger) GetAccount(ctx context.Context, t *tenancy.Tenant, id AccountID) (Account, error) {
	if err := checkID(id); err != nil {
		return Account{}, err
	}
	a, err := scanAccount(t.QueryRow(ctx, stmtAccount, tenancy.Args{"account": id}))
	if errors.Is(err, tenancy.ErrNotFound) {
		return Account{}, &NotFoundError{What: "account", ID: id.String()}
	}
	if err != nil {
		return Account{}, mapError("get account", err)
	}
	return a, nil
}

func scanAccount(row pgx.Row, more ...any) (Account, error) {
	var a Account
	var user *uuid.UUID
	err := row.Scan(append([]any{&a.ID, &a.Kind, &user, &a.CreditLimit, &a.CreatedAt, &a.UpdatedAt}, more...)...)
	if user != nil {
		a.UserID = tenancy.UserIDFromUUID(*user)
	}
	a.CreatedAt, a.UpdatedAt = a.CreatedAt.UTC(), a.UpdatedAt.UTC()
	return a, err
}

// BalanceParams asks for an account's balance now.
type BalanceParams struct {
	Account AccountID
	// WithLots also lists the lots with credits in them, or to come, in
	// burn order.
	WithLots bool
}

// Balance returns an account's balance now, correct at read time: holds
// and lots past their expiry count as expired, scheduled grants past
// their start as effective, whether or not a write or a sweep has
// journaled it yet. One statement, which reads only the account's row
// while nothing is due.
func (l *Ledger) Balance(ctx context.Context, t *tenancy.Tenant, p BalanceParams) (Balance, error) {
	if err := checkID(p.Account); err != nil {
		return Balance{}, err
	}
	bs, err := l.balances(ctx, t, []AccountID{p.Account}, l.readAt(), p.WithLots)
	if err != nil {
		return Balance{}, err
	}
	return bs[0].Balance, nil
}

// BalancesParams asks for the balances of many accounts.
type BalancesParams struct {
	Accounts []AccountID // 1..MaxBatch accounts
}

// Balances returns the balances of many accounts now, in the order given,
// in one statement. ErrNotFound if any of them does not exist.
func (l *Ledger) Balances(ctx context.Context, t *tenancy.Tenant, p BalancesParams) ([]Balance, error) {
	if len(p.Accounts) == 0 || len(p.Accounts) > MaxBatch {
		return nil, invalid("accounts", "%d accounts; ask for 1 to %d", len(p.Accounts), MaxBatch)
	}
	for _, id := range p.Accounts {
		if err := checkID(id); err != nil {
			return nil, err
		}
	}
	bs, err := l.balances(ctx, t, p.Accounts, l.readAt(), false)
	if err != nil {
		return nil, err
	}
	out := make([]Balance, len(bs))
	for i, b := range bs {
		out[i] = b.Balance
	}
	return out, nil
}

// BalanceAtParams asks for an account's balance at an instant.
type BalanceAtParams struct {
	Account AccountID
	At      time.Time // not in the future
}

// BalanceAt returns an account's balance at an instant: what a Balance
// read then would have said, once every write made at that instant is
// counted. Before the account's last write it is the sum of the journal's
// entries in effect by then (each at its effective_at: an expiry counts
// from the lot's expiry even if it was journaled later); from the last
// write on, the stored rows, read as Balance reads them. It reads the
// account's journal (an index scan of it), so it costs more than Balance
// on a long history.
func (l *Ledger) BalanceAt(ctx context.Context, t *tenancy.Tenant, p BalanceAtParams) (PastBalance, error) {
	if err := checkID(p.Account); err != nil {
		return PastBalance{}, err
	}
	if p.At.IsZero() {
		return PastBalance{}, invalid("at", "is zero; Balance reads now")
	}
	at := p.At.UTC().Truncate(time.Microsecond)
	if now := l.now(); now != nil && at.After(*now) {
		return PastBalance{}, invalid("at", "%s is in the future", at.Format(time.RFC3339Nano))
	}
	bs, err := l.balances(ctx, t, []AccountID{p.Account}, &at, false)
	if err != nil {
		return PastBalance{}, err
	}
	b := bs[0].Balance
	return PastBalance{AccountID: b.AccountID, At: b.At, Total: b.Total, Held: b.Held, Available: b.Available, Debt: b.Debt}, nil
}

type balanceRow struct {
	Balance
	past bool
}

func (l *Ledger) balances(ctx context.Context, t *tenancy.Tenant, ids []AccountID, at *time.Time, withLots bool) ([]balanceRow, error) {
	raw := make([]uuid.UUID, len(ids))
	for i, id := range ids {
		raw[i] = id.UUID()
	}
	rows, err := t.Query(ctx, stmtBalances, tenancy.Args{"accounts": raw, "at": at, "with_lots": withLots})
	if err != nil {
		return nil, mapError("balance", err)
	}
	got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (balanceRow, error) {
		var b balanceRow
		var items []byte
		err := row.Scan(&b.AccountID, &b.CreditLimit, &b.At, &b.past, &b.Total, &b.Held, &b.Debt, &b.Spendable, &b.Scheduled, &items)
		if err != nil {
			return b, err
		}
		b.At = b.At.UTC()
		b.Available = b.Total - b.Held
		// Spendable holds the lots' unheld credits until here.
		b.Spendable += max(0, b.CreditLimit-b.Debt)
		if len(items) > 0 {
			if err := json.Unmarshal(items, &b.Lots); err != nil {
				return b, err
			}
			for i := range b.Lots {
				normalizeGrant(&b.Lots[i])
			}
		}
		return b, nil
	})
	if err != nil {
		return nil, mapError("balance", err)
	}
	out := make([]balanceRow, 0, len(ids))
	for _, id := range ids {
		i := slices.IndexFunc(got, func(b balanceRow) bool { return b.AccountID == id })
		if i < 0 {
			return nil, &NotFoundError{What: "account", ID: id.String()}
		}
		out = append(out, got[i])
	}
	return out, nil
}

// ListAccountsParams asks for a page of the workspace's accounts.
type ListAccountsParams struct {
	Page tenancy.Page
}

// accountsList names the accounts list in its cursors.
const accountsList = "credits.accounts"

// ListAccounts lists the workspace's accounts by id, each with the
// member's name and the balance now, one page at a time, in two
// statements whatever the page's size.
func (l *Ledger) ListAccounts(ctx context.Context, t *tenancy.Tenant, p ListAccountsParams) (tenancy.List[AccountBalance], error) {
	q, err := p.Page.Query(t, accountsList)
	if err != nil {
		return tenancy.List[AccountBalance]{}, err
	}
	after := uuid.Nil
	if q.After != nil {
		after = q.After.ID
	}
	rows, err := t.Query(ctx, stmtAccounts, tenancy.Args{"after": after, "limit": int64(q.Limit) + 1, "offset": int64(q.Offset)})
	if err != nil {
		return tenancy.List[AccountBalance]{}, mapError("list accounts", err)
	}
	items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AccountBalance, error) {
		var ab AccountBalance
		a, err := scanAccount(row, &ab.Email, &ab.DisplayName)
		ab.Account = a
		return ab, err
	})
	if err != nil {
		return tenancy.List[AccountBalance]{}, mapError("list accounts", err)
	}
	list := tenancy.Paginate(t, accountsList, q, items, func(a AccountBalance) tenancy.Keyset { return tenancy.Keyset{ID: a.ID.UUID()} })
	if len(list.Items) > 0 {
		ids := make([]AccountID, len(list.Items))
		for i, a := range list.Items {
			ids[i] = a.ID
		}
		bs, err := l.balances(ctx, t, ids, l.readAt(), false)
		if err != nil {
			return tenancy.List[AccountBalance]{}, err
		}
		for i := range list.Items {
			list.Items[i].Balance = bs[i].Balance
		}
	}
	if q.WithTotal {
		var total int64
		if err := t.QueryRow(ctx, stmtCountAccounts, nil).Scan(&total); err != nil {
			return tenancy.List[AccountBalance]{}, mapError("count accounts", err)
		}
		list.Total = &total
	}
	return list, nil
}

// GetGrant returns a lot as it stands now (spent, expired or voided ones
// too), or ErrNotFound.
func (l *Ledger) GetGrant(ctx context.Context, t *tenancy.Tenant, id GrantID) (Grant, error) {
	if err := checkID(id); err != nil {
		return Grant{}, err
	}
	var raw []byte
	err := t.QueryRow(ctx, stmtGetGrant, tenancy.Args{"grant": id, "at": l.readAt()}).Scan(&raw)
	if errors.Is(err, tenancy.ErrNotFound) {
		return Grant{}, &NotFoundError{What: "grant", ID: id.String()}
	}
	if err != nil {
		return Grant{}, mapError("get grant", err)
	}
	var g Grant
	if err := json.Unmarshal(raw, &g); err != nil {
		return Grant{}, fmt.Errorf("credits: get grant: %w", err)
	}
	normalizeGrant(&g)
	return g, nil
}

// normalizeGrant gives metadata one spelling (compact), however it was
// stored.
func normalizeGrant(g *Grant) {
	if compact, err := normalizeMetadata(g.Metadata); err == nil {
		g.Metadata = compact
	}
}

// GetHold returns a hold as it stands now (an active hold past its expiry
// has expired), or ErrNotFound.
func (l *Ledger) GetHold(ctx context.Context, t *tenancy.Tenant, id HoldID) (Hold, error) {
	if err := checkID(id); err != nil {
		return Hold{}, err
	}
	var h Hold
	var lots []byte
	err := t.QueryRow(ctx, stmtGetHold, tenancy.Args{"hold": id, "at": l.readAt()}).Scan(
		&h.ID, &h.AccountID, &h.Amount, &h.State, &h.Captured, &h.Reference, &h.ExpiresAt, &h.ResolvedAt, &h.CreatedAt, &lots)
	if errors.Is(err, tenancy.ErrNotFound) {
		return Hold{}, &NotFoundError{What: "hold", ID: id.String()}
	}
	if err != nil {
		return Hold{}, mapError("get hold", err)
	}
	h.ExpiresAt, h.CreatedAt = h.ExpiresAt.UTC(), h.CreatedAt.UTC()
	if h.ResolvedAt != nil {
		r := h.ResolvedAt.UTC()
		h.ResolvedAt = &r
	}
	if len(lots) > 0 {
		if err := json.Unmarshal(lots, &h.Lots); err != nil {
			return Hold{}, fmt.Errorf("credits: get hold: %w", err)
		}
	}
	return h, nil
}

func scanEntry(row pgx.Row) (Entry, error) {
	var e Entry
	var grant, hold, refunded *uuid.UUID
	var lots []byte
	err := row.Scan(&e.ID, &e.AccountID, &e.Seq, &e.Kind, &e.Amount, &e.HeldDelta, &e.DebtDelta,
		&e.BalanceAfter, &e.HeldAfter, &e.DebtAfter, &grant, &hold, &refunded, &e.Reference, &e.EffectiveAt, &e.RecordedAt, &lots)
	if err != nil {
		return e, err
	}
	if grant != nil {
		e.GrantID = tenancy.IDFromUUID[grantKind](*grant)
	}
	if hold != nil {
		e.HoldID = tenancy.IDFromUUID[holdKind](*hold)
	}
	if refunded != nil {
		e.RefundOf = tenancy.IDFromUUID[entryKind](*refunded)
	}
	e.EffectiveAt, e.RecordedAt = e.EffectiveAt.UTC(), e.RecordedAt.UTC()
	if len(lots) > 0 {
		if err := json.Unmarshal(lots, &e.Lots); err != nil {
			return e, err
		}
	}
	return e, nil
}

// GetEntry returns a journal entry with its per-lot trace, or ErrNotFound.
func (l *Ledger) GetEntry(ctx context.Context, t *tenancy.Tenant, id EntryID) (Entry, error) {
	if err := checkID(id); err != nil {
		return Entry{}, err
	}
	e, err := scanEntry(t.QueryRow(ctx, stmtGetEntry, tenancy.Args{"entry": id}))
	if errors.Is(err, tenancy.ErrNotFound) {
		return Entry{}, &NotFoundError{What: "entry", ID: id.String()}
	}
	if err != nil {
		return Entry{}, mapError("get entry", err)
	}
	return e, nil
}

// JournalParams asks for a page of an account's journal.
type JournalParams struct {
	Account AccountID
	// Kinds keeps only entries of these kinds (all when empty).
	Kinds []EntryKind
	// Reference keeps only entries with this reference (all when empty).
	Reference string
	// Since and Until keep only entries recorded in [Since, Until) (no
	// bound when zero).
	Since, Until time.Time
	Page         tenancy.Page
}

// journalList names the journal in its cursors.
const journalList = "credits.journal"

// Journal lists an account's journal, newest entry first, each with the
// account's figures after it and its per-lot trace, one page at a time
// (keyset paging on the entry's number; offset paging is refused, the
// journal only grows). The journal is what was written: an expiry that
// no write or sweep has journaled yet is not in it (Sweep writes it).
func (l *Ledger) Journal(ctx context.Context, t *tenancy.Tenant, p JournalParams) (tenancy.List[Entry], error) {
	if err := checkID(p.Account); err != nil {
		return tenancy.List[Entry]{}, err
	}
	if p.Page.Offset > 0 || p.Page.WithTotal {
		// Entries are numbered 1..n per account: the newest's Seq is the
		// count of an unfiltered journal.
		return tenancy.List[Entry]{}, invalid("page", "the journal pages by cursor only, without a total")
	}
	q, err := p.Page.Query(t, journalList+":"+p.Account.String())
	if err != nil {
		return tenancy.List[Entry]{}, err
	}
	kinds := make([]string, 0, len(p.Kinds))
	for _, k := range p.Kinds {
		kinds = append(kinds, string(k))
	}
	if err := checkText("reference", p.Reference, MaxReferenceBytes); err != nil {
		return tenancy.List[Entry]{}, err
	}
	before := int64(math.MaxInt64)
	if q.After != nil {
		before = q.After.Int
	}
	rows, err := t.Query(ctx, stmtJournal, tenancy.Args{
		"account": p.Account, "before": before, "kinds": kinds, "reference": p.Reference,
		"since": optionalTime(p.Since), "until": optionalTime(p.Until), "limit": int64(q.Limit) + 1,
	})
	if err != nil {
		return tenancy.List[Entry]{}, mapError("journal", err)
	}
	entries, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Entry, error) { return scanEntry(row) })
	if err != nil {
		return tenancy.List[Entry]{}, mapError("journal", err)
	}
	list := tenancy.Paginate(t, journalList+":"+p.Account.String(), q, entries, func(e Entry) tenancy.Keyset { return tenancy.Keyset{Int: e.Seq} })
	return list, nil
}
