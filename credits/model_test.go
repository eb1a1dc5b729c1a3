package credits_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// The model is the ledger's semantics written again, plainly, in memory:
// what the property test holds the database to. It knows nothing of
// indexes, locks, settle_due_at or read-time shortcuts: every operation
// settles its account first, and every read settles a copy. Ids the
// database makes (grants, holds, entries) it learns from the database's
// results.

type mLot struct {
	id          credits.GrantID
	account     credits.AccountID
	amount      int64
	remaining   int64
	held        int64
	priority    int
	effectiveAt time.Time
	expiresAt   *time.Time
	category    credits.Category
	metadata    string
	reference   string
	journaled   bool
	voidedAt    *time.Time
	createdAt   time.Time
}

type mMark struct {
	lot    credits.GrantID
	amount int64
}

type mHold struct {
	id         credits.HoldID
	account    credits.AccountID
	amount     int64
	expiresAt  time.Time
	state      credits.HoldState
	captured   int64
	reference  string
	resolvedAt *time.Time
	createdAt  time.Time
	marks      []mMark // in burn order
}

type mAccount struct {
	id        credits.AccountID
	limit     int64
	balance   int64
	held      int64
	debt      int64
	scheduled int64
	lots      []*mLot
	holds     []*mHold
	entries   []credits.Entry
}

// model is every account of one workspace.
type model struct {
	accounts []*mAccount
}

func (m *model) clone() *model {
	c := &model{}
	for _, a := range m.accounts {
		ca := *a
		ca.lots = nil
		for _, l := range a.lots {
			cl := *l
			ca.lots = append(ca.lots, &cl)
		}
		ca.holds = nil
		for _, h := range a.holds {
			ch := *h
			ch.marks = slices.Clone(h.marks)
			ca.holds = append(ca.holds, &ch)
		}
		ca.entries = slices.Clone(a.entries)
		c.accounts = append(c.accounts, &ca)
	}
	return c
}

func (m *model) account(id credits.AccountID) *mAccount {
	for _, a := range m.accounts {
		if a.id == id {
			return a
		}
	}
	return nil
}

func (a *mAccount) lot(id credits.GrantID) *mLot {
	for _, l := range a.lots {
		if l.id == id {
			return l
		}
	}
	return nil
}

func (m *model) findLot(id credits.GrantID) (*mAccount, *mLot) {
	for _, a := range m.accounts {
		if l := a.lot(id); l != nil {
			return a, l
		}
	}
	return nil, nil
}

func (m *model) findHold(id credits.HoldID) (*mAccount, *mHold) {
	for _, a := range m.accounts {
		for _, h := range a.holds {
			if h.id == id {
				return a, h
			}
		}
	}
	return nil, nil
}

func (m *model) findEntry(id credits.EntryID) (*mAccount, *credits.Entry) {
	for _, a := range m.accounts {
		for i := range a.entries {
			if a.entries[i].ID == id && !id.IsZero() {
				return a, &a.entries[i]
			}
		}
	}
	return nil, nil
}

// burnLess is the burn order: priority, earliest expiry (none last),
// oldest, id (as Postgres compares uuids: bytewise).
func burnLess(x, y *mLot) int {
	if x.priority != y.priority {
		return cmpInt(x.priority, y.priority)
	}
	switch {
	case x.expiresAt == nil && y.expiresAt != nil:
		return 1
	case x.expiresAt != nil && y.expiresAt == nil:
		return -1
	case x.expiresAt != nil && !x.expiresAt.Equal(*y.expiresAt):
		return x.expiresAt.Compare(*y.expiresAt)
	}
	if !x.effectiveAt.Equal(y.effectiveAt) {
		return x.effectiveAt.Compare(y.effectiveAt)
	}
	xi, yi := x.id.UUID(), y.id.UUID()
	return bytes.Compare(xi[:], yi[:])
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (a *mAccount) burnOrder() []*mLot {
	lots := slices.Clone(a.lots)
	slices.SortStableFunc(lots, burnLess)
	return lots
}

func deadAt(l *mLot, t time.Time) bool {
	return (l.voidedAt != nil && !l.voidedAt.After(t)) || (l.expiresAt != nil && !l.expiresAt.After(t))
}

func live(l *mLot, t time.Time) bool {
	return l.voidedAt == nil && !l.effectiveAt.After(t) && (l.expiresAt == nil || l.expiresAt.After(t))
}

// append writes an entry, moving the account's figures.
func (a *mAccount) append(kind credits.EntryKind, amount, heldDelta, debtDelta int64, grant credits.GrantID, hold credits.HoldID,
	refundOf credits.EntryID, reference string, effective, now time.Time) *credits.Entry {
	a.balance += amount
	a.held += heldDelta
	a.debt += debtDelta
	a.entries = append(a.entries, credits.Entry{
		AccountID: a.id, Seq: int64(len(a.entries)) + 1, Kind: kind,
		Amount: amount, HeldDelta: heldDelta, DebtDelta: debtDelta,
		BalanceAfter: a.balance, HeldAfter: a.held, DebtAfter: a.debt,
		GrantID: grant, HoldID: hold, RefundOf: refundOf, Reference: reference,
		EffectiveAt: effective, RecordedAt: now,
	})
	return &a.entries[len(a.entries)-1]
}

// kill ends x unheld credits of a dead lot at at.
func (a *mAccount) kill(l *mLot, x int64, at, now time.Time) credits.Entry {
	l.remaining -= x
	kind := credits.EntryVoid
	if l.expiresAt != nil && (l.voidedAt == nil || !l.expiresAt.After(*l.voidedAt)) {
		kind = credits.EntryExpire
	}
	return *a.append(kind, -x, 0, 0, l.id, credits.HoldID{}, credits.EntryID{}, l.reference, at, now)
}

// free lets go of a hold's earmarks; into a lot dead at at, they end.
func (a *mAccount) free(h *mHold, at, now time.Time) []credits.Entry {
	var also []credits.Entry
	for _, mk := range h.marks {
		l := a.lot(mk.lot)
		l.held -= mk.amount
		if deadAt(l, at) {
			also = append(also, a.kill(l, mk.amount, at, now))
		}
	}
	return also
}

// settle journals the time-driven changes up to now, in the migration's
// order.
func (a *mAccount) settle(now time.Time) int {
	n := 0
	var activating []*mLot
	for _, l := range a.lots {
		if !l.journaled && l.voidedAt == nil && !l.effectiveAt.After(now) {
			activating = append(activating, l)
		}
	}
	slices.SortStableFunc(activating, func(x, y *mLot) int {
		if !x.effectiveAt.Equal(y.effectiveAt) {
			return x.effectiveAt.Compare(y.effectiveAt)
		}
		xi, yi := x.id.UUID(), y.id.UUID()
		return bytes.Compare(xi[:], yi[:])
	})
	for _, l := range activating {
		repay := min(a.debt, l.amount)
		l.journaled = true
		l.remaining = l.amount - repay
		a.scheduled -= l.amount
		a.append(credits.EntryGrant, l.amount, 0, -repay, l.id, credits.HoldID{}, credits.EntryID{}, l.reference, l.effectiveAt, now)
		n++
	}
	var expiring []*mHold
	for _, h := range a.holds {
		if h.state == credits.HoldActive && !h.expiresAt.After(now) {
			expiring = append(expiring, h)
		}
	}
	slices.SortStableFunc(expiring, func(x, y *mHold) int {
		if !x.expiresAt.Equal(y.expiresAt) {
			return x.expiresAt.Compare(y.expiresAt)
		}
		xi, yi := x.id.UUID(), y.id.UUID()
		return bytes.Compare(xi[:], yi[:])
	})
	for _, h := range expiring {
		h.state = credits.HoldExpired
		at := h.expiresAt
		h.resolvedAt = &at
		a.append(credits.EntryHoldExpired, 0, -h.amount, 0, credits.GrantID{}, h.id, credits.EntryID{}, h.reference, h.expiresAt, now)
		n += 1 + len(a.free(h, h.expiresAt, now))
	}
	var dead []*mLot
	for _, l := range a.lots {
		if l.journaled && l.remaining > l.held && ((l.expiresAt != nil && !l.expiresAt.After(now)) || l.voidedAt != nil) {
			dead = append(dead, l)
		}
	}
	died := func(l *mLot) time.Time {
		switch {
		case l.expiresAt == nil:
			return *l.voidedAt
		case l.voidedAt == nil || l.expiresAt.Before(*l.voidedAt):
			return *l.expiresAt
		}
		return *l.voidedAt
	}
	slices.SortStableFunc(dead, func(x, y *mLot) int {
		if c := died(x).Compare(died(y)); c != 0 {
			return c
		}
		xi, yi := x.id.UUID(), y.id.UUID()
		return bytes.Compare(xi[:], yi[:])
	})
	for _, l := range dead {
		a.kill(l, l.remaining-l.held, died(l), now)
		n++
	}
	return n
}

// view is a lot as reads show it, on a settled account.
func (a *mAccount) view(l *mLot, now time.Time) credits.Grant {
	g := credits.Grant{
		ID: l.id, AccountID: a.id, Amount: l.amount, Held: l.held, Priority: l.priority,
		EffectiveAt: l.effectiveAt, ExpiresAt: l.expiresAt, Category: l.category,
		Metadata: json.RawMessage(l.metadata), Reference: l.reference, VoidedAt: l.voidedAt, CreatedAt: l.createdAt,
	}
	if l.journaled {
		g.Remaining = l.remaining
	}
	if l.journaled && live(l, now) {
		g.Available = l.remaining - l.held
	}
	if !l.journaled && l.voidedAt == nil {
		g.Scheduled = l.amount
	}
	switch {
	case l.voidedAt != nil && (l.expiresAt == nil || l.voidedAt.Before(*l.expiresAt)):
		g.Status = credits.GrantVoided
	case g.Scheduled > 0:
		g.Status = credits.GrantScheduled
	case l.expiresAt != nil && !l.expiresAt.After(now):
		g.Status = credits.GrantExpired
	case g.Remaining == 0:
		g.Status = credits.GrantDepleted
	default:
		g.Status = credits.GrantActive
	}
	return g
}

func (a *mAccount) holdView(h *mHold) credits.Hold {
	v := credits.Hold{
		ID: h.id, AccountID: a.id, Amount: h.amount, State: h.state, Captured: h.captured,
		Reference: h.reference, ExpiresAt: h.expiresAt, ResolvedAt: h.resolvedAt, CreatedAt: h.createdAt,
	}
	for _, mk := range h.marks {
		v.Lots = append(v.Lots, credits.HoldLot{GrantID: mk.lot, Amount: mk.amount})
	}
	return v
}

// balance is what a read at now reports: the figures of a settled copy.
func (m *model) balance(id credits.AccountID, now time.Time) credits.Balance {
	a := m.clone().account(id)
	a.settle(now)
	b := credits.Balance{
		AccountID: id, At: now, Total: a.balance, Held: a.held, Available: a.balance - a.held,
		Debt: a.debt, CreditLimit: a.limit, Scheduled: a.scheduled,
	}
	for _, l := range a.burnOrder() {
		if l.journaled && live(l, now) {
			b.Spendable += l.remaining - l.held
		}
		if v := a.view(l, now); v.Remaining > 0 || v.Scheduled > 0 {
			b.Lots = append(b.Lots, v)
		}
	}
	b.Spendable += max(0, a.limit-a.debt)
	return b
}

func (m *model) holdAt(id credits.HoldID, now time.Time) credits.Hold {
	c := m.clone()
	a, h := c.findHold(id)
	a.settle(now)
	return a.holdView(h)
}

func (m *model) grantAt(id credits.GrantID, now time.Time) credits.Grant {
	c := m.clone()
	a, l := c.findLot(id)
	a.settle(now)
	return a.view(l, now)
}

// free returns the live lots' unheld credits, in burn order.
func (a *mAccount) spendable(now time.Time) []*mLot {
	var out []*mLot
	for _, l := range a.burnOrder() {
		if l.journaled && live(l, now) && l.remaining > l.held {
			out = append(out, l)
		}
	}
	return out
}

func trace(a *mAccount, takes map[credits.GrantID]int64) []credits.EntryLot {
	var out []credits.EntryLot
	for _, l := range a.burnOrder() {
		if n := takes[l.id]; n > 0 {
			out = append(out, credits.EntryLot{GrantID: l.id, Amount: n, Category: l.category})
		}
	}
	return out
}

// The operations. Each works on a copy and returns it with the result; the
// caller keeps the copy only on success (a refused call changes nothing,
// its settling included, as the database's rollback ensures).

func (m *model) grant(p credits.GrantParams, id credits.GrantID, now time.Time) (*model, credits.GrantResult, error) {
	c := m.clone()
	a := c.account(p.Account)
	if a == nil {
		return nil, credits.GrantResult{}, &credits.NotFoundError{What: "account", ID: p.Account.String()}
	}
	a.settle(now)
	eff := now
	if p.EffectiveAt.After(now) {
		eff = p.EffectiveAt
	}
	meta := string(p.Metadata)
	if meta == "" {
		meta = "{}"
	}
	l := &mLot{
		id: id, account: a.id, amount: p.Amount, remaining: p.Amount, priority: p.Priority, effectiveAt: eff,
		category: p.Category, metadata: meta, reference: p.Reference, createdAt: now,
	}
	if !p.ExpiresAt.IsZero() {
		x := p.ExpiresAt
		l.expiresAt = &x
	}
	a.lots = append(a.lots, l)
	var res credits.GrantResult
	if !eff.After(now) {
		repay := min(a.debt, p.Amount)
		l.remaining -= repay
		l.journaled = true
		e := *a.append(credits.EntryGrant, p.Amount, 0, -repay, id, credits.HoldID{}, credits.EntryID{}, l.reference, now, now)
		res.Entry = &e
	} else {
		a.scheduled += p.Amount
	}
	res.Grant = a.view(l, now)
	return c, res, nil
}

func (m *model) spend(p credits.SpendParams, entry credits.EntryID, now time.Time) (*model, credits.SpendResult, error) {
	c := m.clone()
	a := c.account(p.Account)
	if a == nil {
		return nil, credits.SpendResult{}, &credits.NotFoundError{What: "account", ID: p.Account.String()}
	}
	a.settle(now)
	left := p.Amount
	takes := map[credits.GrantID]int64{}
	for _, l := range a.spendable(now) {
		if left == 0 {
			break
		}
		t := min(l.remaining-l.held, left)
		takes[l.id] = t
		left -= t
	}
	headroom := max(0, a.limit-a.debt)
	if left > headroom {
		return nil, credits.SpendResult{}, &credits.InsufficientCreditsError{Available: p.Amount - left + headroom, Requested: p.Amount}
	}
	for id, t := range takes {
		a.lot(id).remaining -= t
	}
	e := a.append(credits.EntrySpend, -p.Amount, 0, left, credits.GrantID{}, credits.HoldID{}, credits.EntryID{}, p.Reference, now, now)
	e.ID = entry
	e.Lots = trace(a, takes)
	return c, credits.SpendResult{Entry: *e}, nil
}

func (m *model) hold(p credits.HoldParams, id credits.HoldID, now time.Time) (*model, credits.HoldResult, error) {
	c := m.clone()
	a := c.account(p.Account)
	if a == nil {
		return nil, credits.HoldResult{}, &credits.NotFoundError{What: "account", ID: p.Account.String()}
	}
	a.settle(now)
	left := p.Amount
	h := &mHold{id: id, account: a.id, amount: p.Amount, expiresAt: now.Add(p.TTL), state: credits.HoldActive, reference: p.Reference, createdAt: now}
	for _, l := range a.spendable(now) {
		if left == 0 {
			break
		}
		t := min(l.remaining-l.held, left)
		h.marks = append(h.marks, mMark{lot: l.id, amount: t})
		left -= t
	}
	if left > 0 {
		return nil, credits.HoldResult{}, &credits.InsufficientCreditsError{Available: p.Amount - left, Requested: p.Amount}
	}
	for _, mk := range h.marks {
		a.lot(mk.lot).held += mk.amount
	}
	a.holds = append(a.holds, h)
	e := *a.append(credits.EntryHold, 0, p.Amount, 0, credits.GrantID{}, id, credits.EntryID{}, p.Reference, now, now)
	return c, credits.HoldResult{Hold: a.holdView(h), Entry: e}, nil
}

func holdStateErr(h *mHold) error {
	if h.state == credits.HoldActive {
		return nil
	}
	return &credits.HoldStateError{Hold: h.id, State: h.state}
}

func (m *model) capture(p credits.CaptureParams, entry credits.EntryID, now time.Time) (*model, credits.CaptureResult, error) {
	c := m.clone()
	a, h := c.findHold(p.Hold)
	if h == nil {
		return nil, credits.CaptureResult{}, &credits.NotFoundError{What: "hold", ID: p.Hold.String()}
	}
	a.settle(now)
	if err := holdStateErr(h); err != nil {
		return nil, credits.CaptureResult{}, err
	}
	left := p.Amount
	takes := map[credits.GrantID]int64{}
	markTakes := make([]int64, len(h.marks))
	for i, mk := range h.marks {
		t := min(mk.amount, left)
		markTakes[i] = t
		takes[mk.lot] += t
		left -= t
	}
	extra := map[credits.GrantID]int64{}
	if left > 0 {
		for _, l := range a.spendable(now) {
			if left == 0 {
				break
			}
			t := min(l.remaining-l.held, left)
			extra[l.id] = t
			left -= t
		}
		headroom := max(0, a.limit-a.debt)
		if left > headroom {
			return nil, credits.CaptureResult{}, &credits.InsufficientCreditsError{Available: p.Amount - left + headroom, Requested: p.Amount}
		}
	}
	dead := make([]bool, len(h.marks))
	for i, mk := range h.marks {
		l := a.lot(mk.lot)
		dead[i] = deadAt(l, now)
		l.held -= mk.amount
		l.remaining -= markTakes[i]
	}
	for id, t := range extra {
		a.lot(id).remaining -= t
		takes[id] += t
	}
	h.state, h.captured = credits.HoldCaptured, p.Amount
	at := now
	h.resolvedAt = &at
	ref := p.Reference
	if ref == "" {
		ref = h.reference
	}
	e := a.append(credits.EntryCapture, -p.Amount, -h.amount, left, credits.GrantID{}, h.id, credits.EntryID{}, ref, now, now)
	e.ID = entry
	e.Lots = trace(a, takes)
	res := credits.CaptureResult{Hold: a.holdView(h), Entry: *e}
	for i, mk := range h.marks {
		if dead[i] && mk.amount > markTakes[i] {
			res.Also = append(res.Also, a.kill(a.lot(mk.lot), mk.amount-markTakes[i], now, now))
		}
	}
	return c, res, nil
}

func (m *model) release(p credits.ReleaseParams, now time.Time) (*model, credits.ReleaseResult, error) {
	c := m.clone()
	a, h := c.findHold(p.Hold)
	if h == nil {
		return nil, credits.ReleaseResult{}, &credits.NotFoundError{What: "hold", ID: p.Hold.String()}
	}
	a.settle(now)
	if err := holdStateErr(h); err != nil {
		return nil, credits.ReleaseResult{}, err
	}
	h.state = credits.HoldReleased
	at := now
	h.resolvedAt = &at
	e := *a.append(credits.EntryRelease, 0, -h.amount, 0, credits.GrantID{}, h.id, credits.EntryID{}, h.reference, now, now)
	also := a.free(h, now, now)
	return c, credits.ReleaseResult{Hold: a.holdView(h), Entry: e, Also: also}, nil
}

// refunded returns what refunds have given back of entry s: in all, and
// per lot of its trace.
func (a *mAccount) refunded(s *credits.Entry) (int64, map[credits.GrantID]int64) {
	total := int64(0)
	perLot := map[credits.GrantID]int64{}
	for _, r := range a.entries {
		if r.Kind != credits.EntryRefund || r.RefundOf != s.ID {
			continue
		}
		total += r.Amount
		for _, rl := range r.Lots {
			perLot[rl.GrantID] += rl.Amount
		}
	}
	return total, perLot
}

// refund needs the id of the lot a refund may make (newLot), which the
// database chose.
func (m *model) refund(p credits.RefundParams, entry credits.EntryID, newLot credits.GrantID, now time.Time) (*model, credits.RefundResult, error) {
	c := m.clone()
	a, s := c.findEntry(p.Entry)
	if s == nil {
		return nil, credits.RefundResult{}, &credits.NotFoundError{What: "entry", ID: p.Entry.String()}
	}
	if s.Kind != credits.EntrySpend && s.Kind != credits.EntryCapture {
		return nil, credits.RefundResult{}, credits.ErrNotRefundable
	}
	a.settle(now)
	s = &a.entries[s.Seq-1]
	total, perLot := a.refunded(s)
	if p.Amount > -s.Amount-total {
		return nil, credits.RefundResult{}, &credits.RefundExceedsError{Refundable: -s.Amount - total, Requested: p.Amount}
	}
	// The debt part: what refunds gave back beyond the spend's own lots.
	ownLots := int64(0)
	for _, sl := range s.Lots {
		ownLots += perLot[sl.GrantID]
	}
	debtLeft := s.DebtDelta - (total - ownLots)
	left := p.Amount
	take := min(left, debtLeft)
	left -= take
	repay := min(take, a.debt)
	excess := take - repay
	type give struct {
		lot  *mLot
		n    int64
		dead bool
	}
	var gives []give
	lots := make([]*mLot, 0, len(s.Lots))
	for _, sl := range s.Lots {
		lots = append(lots, a.lot(sl.GrantID))
	}
	slices.SortStableFunc(lots, func(x, y *mLot) int { return -burnLess(x, y) })
	for _, l := range lots {
		if left == 0 {
			break
		}
		var took int64
		for _, sl := range s.Lots {
			if sl.GrantID == l.id {
				took = sl.Amount
			}
		}
		rest := took - perLot[l.id]
		if rest == 0 {
			continue
		}
		n := min(left, rest)
		left -= n
		gives = append(gives, give{lot: l, n: n, dead: deadAt(l, now)})
	}
	for _, g := range gives {
		g.lot.remaining += g.n
	}
	if excess > 0 {
		l := &mLot{
			id: newLot, account: a.id, amount: excess, remaining: excess, effectiveAt: now,
			category: credits.CategoryRefund, metadata: fmt.Sprintf(`{"refundOf":"%s"}`, s.ID), reference: p.Reference,
			journaled: true, createdAt: now,
		}
		a.lots = append(a.lots, l)
		gives = append(gives, give{lot: l, n: excess})
	}
	e := a.append(credits.EntryRefund, p.Amount, 0, -repay, credits.GrantID{}, credits.HoldID{}, s.ID, p.Reference, now, now)
	e.ID = entry
	takes := map[credits.GrantID]int64{}
	for _, g := range gives {
		takes[g.lot.id] += g.n
	}
	e.Lots = trace(a, takes)
	res := credits.RefundResult{Entry: *e}
	for _, g := range gives {
		if g.dead {
			res.Also = append(res.Also, a.kill(g.lot, g.n, now, now))
		}
	}
	return c, res, nil
}

func (m *model) void(p credits.VoidParams, now time.Time) (*model, credits.VoidResult, error) {
	c := m.clone()
	a, l := c.findLot(p.Grant)
	if l == nil {
		return nil, credits.VoidResult{}, &credits.NotFoundError{What: "grant", ID: p.Grant.String()}
	}
	a.settle(now)
	var res credits.VoidResult
	if l.voidedAt == nil {
		at := now
		l.voidedAt = &at
		switch {
		case !l.journaled:
			a.scheduled -= l.amount
		case l.remaining > l.held:
			e := a.kill(l, l.remaining-l.held, now, now)
			res.Entry = &e
		}
	}
	res.Grant = a.view(l, now)
	return c, res, nil
}

func (m *model) sweep(now time.Time) (*model, int) {
	c := m.clone()
	n := 0
	for _, a := range c.accounts {
		n += a.settle(now)
	}
	return c, n
}

// accountByID opens an account in the model.
func (m *model) open(id credits.AccountID, limit int64) {
	m.accounts = append(m.accounts, &mAccount{id: id, limit: limit})
}

var _ = tenancy.ErrNotFound
