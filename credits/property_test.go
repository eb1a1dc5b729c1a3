package credits_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// defaultChecks is how many random sequences TestLedgerMatchesModel runs
// unless -rapid.checks says otherwise (rapid's own default, 100, takes
// minutes against a database). Heavier runs:
//
//	go test -run TestLedgerMatchesModel -rapid.checks=500 -rapid.steps=80 ./credits/
const defaultChecks = 12

func init() {
	// Set before the flags are parsed, so that -rapid.checks still wins.
	if f := flag.Lookup("rapid.checks"); f != nil {
		_ = f.Value.Set(fmt.Sprint(defaultChecks))
		f.DefValue = fmt.Sprint(defaultChecks)
	}
}

// doneOp is a keyed call that succeeded, with its first result: a retry
// with the same key must return that result, flagged as a replay.
type doneOp struct {
	key   string
	retry func(ctx context.Context) (any, error)
	first any
}

// coverage counts what the sequences exercised, so that a pass can be
// judged: outcomes per operation, entry kinds, and the rare paths.
type coverage struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *coverage) add(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]int{}
	}
	c.counts[what]++
}

func (c *coverage) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := slices.Sorted(maps.Keys(c.counts))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, c.counts[k])
	}
	return b.String()
}

type snapshot struct {
	at time.Time
	m  *model
}

// machine drives the ledger and the model side by side.
type machine struct {
	ctx      context.Context
	ledger   *credits.Ledger
	tn       *tenancy.Tenant
	clock    *testClock
	m        *model
	accounts []credits.AccountID
	grants   []credits.GrantID
	holds    []credits.HoldID
	spends   []credits.EntryID // spends and captures, the refundable entries
	done     []doneOp
	history  []snapshot
	cover    *coverage
}

// Random sequences of grants, spends, holds, captures, releases, refunds,
// voids, sweeps, credit limit changes, retries, reused keys and clock moves
// run against the database and against the model; after every step the
// results (and errors), every account's balance and lots, every hold, a
// lot, the whole journal, a balance at a past instant and Reconcile must
// match. On failure rapid shrinks the sequence to a minimal one.
func TestLedgerMatchesModel(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 0)
	users := tenancy.NewUsers(nil)
	cover := &coverage{}
	defer func() { t.Logf("exercised: %s", cover) }()
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		owner, err := users.Create(ctx, w.pool, tenancy.CreateUserParams{Email: key("owner") + "@example.com"})
		require.NoError(rt, err)
		member, err := users.Create(ctx, w.pool, tenancy.CreateUserParams{Email: key("member") + "@example.com"})
		require.NoError(rt, err)
		ws, err := tenancy.NewWorkspaces(nil).Create(ctx, w.pool, tenancy.CreateWorkspaceParams{Name: "model", Owner: owner.ID})
		require.NoError(rt, err)
		scope, _ := tenancy.NewScope(ws.ID)
		tn, err := tenancy.NewTenant(w.pool, scope)
		require.NoError(rt, err)
		_, err = tenancy.NewMembers(nil).Add(ctx, tn, tenancy.AddMemberParams{User: member.ID, Role: tenancy.RoleMember})
		require.NoError(rt, err)

		clock := newClock()
		// One turn in flight makes bursts over both accounts go as one
		// batch; two (the default) lets them run side by side.
		inFlight := rapid.IntRange(1, 2).Draw(rt, "max in flight")
		s := &machine{ctx: ctx, ledger: credits.New(&credits.Config{Clock: clock.Now, MaxInFlight: inFlight}), tn: tn, clock: clock, m: &model{}, cover: cover}
		limit := rapid.SampledFrom([]int64{0, 0, 50, 200}).Draw(rt, "pool credit limit")
		for _, p := range []credits.OpenAccountParams{{CreditLimit: limit}, {User: member.ID}} {
			res, err := s.ledger.OpenAccount(ctx, tn, p)
			require.NoError(rt, err)
			s.accounts = append(s.accounts, res.ID)
			s.m.open(res.ID, p.CreditLimit)
		}
		s.snap()
		rt.Repeat(map[string]func(*rapid.T){
			"grant":    s.grant,
			"spend":    s.spend,
			"hold":     s.hold,
			"capture":  s.capture,
			"release":  s.release,
			"refund":   s.refund,
			"void":     s.void,
			"sweep":    s.sweep,
			"advance":  s.advance,
			"limit":    s.setLimit,
			"retry":    s.retry,
			"conflict": s.conflict,
			"burst":    s.burst,
			"":         s.check,
		})
	})
}

func (s *machine) now() time.Time { return s.clock.Now() }

func (s *machine) snap() { s.history = append(s.history, snapshot{at: s.now(), m: s.m.clone()}) }

func (s *machine) pickAccount(t *rapid.T) credits.AccountID {
	return rapid.SampledFrom(s.accounts).Draw(t, "account")
}

// commit keeps the model's copy when the database succeeded, after
// comparing both outcomes.
func (s *machine) commit(t *rapid.T, next *model, dbRes, modelRes any, dbErr, modelErr error) bool {
	t.Helper()
	requireSameError(t, dbErr, modelErr)
	op := strings.TrimPrefix(fmt.Sprintf("%T", dbRes), "credits.")
	if dbErr != nil {
		var typed interface{ Is(error) bool }
		if errors.As(dbErr, &typed) {
			s.cover.add(op + ":" + strings.TrimPrefix(fmt.Sprintf("%T", typed), "*credits."))
		} else {
			s.cover.add(op + ":" + dbErr.Error())
		}
		return false
	}
	s.cover.add(op + ":ok")
	for _, e := range alsoOf(dbRes) {
		s.cover.add("also:" + string(e.Kind))
	}
	require.Equal(t, normalize(modelRes), normalize(dbRes))
	s.m = next
	s.snap()
	return true
}

func (s *machine) remember(k string, first any, retry func(ctx context.Context) (any, error)) {
	s.done = append(s.done, doneOp{key: k, first: first, retry: retry})
}

func (s *machine) grant(t *rapid.T) {
	now := s.now()
	p := credits.GrantParams{
		Account:  s.pickAccount(t),
		Amount:   rapid.Int64Range(1, 200).Draw(t, "amount"),
		Priority: rapid.IntRange(0, 2).Draw(t, "priority"),
		Category: rapid.SampledFrom([]credits.Category{credits.CategoryPurchase, credits.CategoryPromotional, credits.CategoryPlan}).Draw(t, "category"),
		Key:      key("grant"),
	}
	if rapid.IntRange(0, 4).Draw(t, "scheduled") == 0 {
		p.EffectiveAt = now.Add(time.Duration(rapid.IntRange(1, 720).Draw(t, "starts in minutes")) * time.Minute)
	}
	if rapid.Bool().Draw(t, "expires") {
		from := now
		if !p.EffectiveAt.IsZero() {
			from = p.EffectiveAt
		}
		p.ExpiresAt = from.Add(time.Duration(rapid.IntRange(1, 48*60).Draw(t, "lasts minutes")) * time.Minute)
	}
	if n := rapid.IntRange(0, 3).Draw(t, "metadata"); n > 0 {
		p.Metadata = json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))
	}
	res, err := s.ledger.Grant(s.ctx, s.tn, p)
	next, mres, merr := s.m.grant(p, res.Grant.ID, now)
	if s.commit(t, next, res, mres, err, merr) {
		s.grants = append(s.grants, res.Grant.ID)
		s.remember(p.Key, res, func(ctx context.Context) (any, error) { return s.ledger.Grant(ctx, s.tn, p) })
	}
}

func (s *machine) spend(t *rapid.T) {
	p := credits.SpendParams{
		Account:   s.pickAccount(t),
		Amount:    rapid.Int64Range(1, 300).Draw(t, "amount"),
		Reference: rapid.SampledFrom([]string{"", "job"}).Draw(t, "reference"),
		Key:       key("spend"),
	}
	res, err := s.ledger.Spend(s.ctx, s.tn, p)
	next, mres, merr := s.m.spend(p, res.Entry.ID, s.now())
	if s.commit(t, next, res, mres, err, merr) {
		s.spends = append(s.spends, res.Entry.ID)
		s.remember(p.Key, res, func(ctx context.Context) (any, error) { return s.ledger.Spend(ctx, s.tn, p) })
	}
}

func (s *machine) hold(t *rapid.T) {
	p := credits.HoldParams{
		Account:   s.pickAccount(t),
		Amount:    rapid.Int64Range(1, 150).Draw(t, "amount"),
		TTL:       time.Duration(rapid.IntRange(1, 360).Draw(t, "ttl minutes")) * time.Minute,
		Reference: rapid.SampledFrom([]string{"", "llm"}).Draw(t, "reference"),
		Key:       key("hold"),
	}
	res, err := s.ledger.Hold(s.ctx, s.tn, p)
	next, mres, merr := s.m.hold(p, res.Hold.ID, s.now())
	if s.commit(t, next, res, mres, err, merr) {
		s.holds = append(s.holds, res.Hold.ID)
		s.remember(p.Key, res, func(ctx context.Context) (any, error) { return s.ledger.Hold(ctx, s.tn, p) })
	}
}

func (s *machine) capture(t *rapid.T) {
	if len(s.holds) == 0 {
		t.Skip("no hold yet")
	}
	p := credits.CaptureParams{
		Hold:      rapid.SampledFrom(s.holds).Draw(t, "hold"),
		Amount:    rapid.Int64Range(1, 200).Draw(t, "amount"),
		Reference: rapid.SampledFrom([]string{"", "actual"}).Draw(t, "reference"),
		Key:       key("capture"),
	}
	res, err := s.ledger.Capture(s.ctx, s.tn, p)
	next, mres, merr := s.m.capture(p, res.Entry.ID, s.now())
	if s.commit(t, next, res, mres, err, merr) {
		s.spends = append(s.spends, res.Entry.ID)
		s.remember(p.Key, res, func(ctx context.Context) (any, error) { return s.ledger.Capture(ctx, s.tn, p) })
	}
}

func (s *machine) release(t *rapid.T) {
	if len(s.holds) == 0 {
		t.Skip("no hold yet")
	}
	p := credits.ReleaseParams{Hold: rapid.SampledFrom(s.holds).Draw(t, "hold"), Key: key("release")}
	res, err := s.ledger.Release(s.ctx, s.tn, p)
	next, mres, merr := s.m.release(p, s.now())
	if s.commit(t, next, res, mres, err, merr) {
		s.remember(p.Key, res, func(ctx context.Context) (any, error) { return s.ledger.Release(ctx, s.tn, p) })
	}
}

func (s *machine) refund(t *rapid.T) {
	if len(s.spends) == 0 {
		t.Skip("nothing to refund yet")
	}
	p := credits.RefundParams{
		Entry:     rapid.SampledFrom(s.spends).Draw(t, "entry"),
		Amount:    rapid.Int64Range(1, 150).Draw(t, "amount"),
		Reference: rapid.SampledFrom([]string{"", "sorry"}).Draw(t, "reference"),
		Key:       key("refund"),
	}
	res, err := s.ledger.Refund(s.ctx, s.tn, p)
	// A refund may make a lot (the part of a debt repaid since): the model
	// takes its id from the database's trace.
	var newLot credits.GrantID
	for _, l := range res.Entry.Lots {
		if !slices.Contains(s.grants, l.GrantID) {
			newLot = l.GrantID
		}
	}
	next, mres, merr := s.m.refund(p, res.Entry.ID, newLot, s.now())
	if s.commit(t, next, res, mres, err, merr) {
		if !newLot.IsZero() {
			s.cover.add("refund:new lot")
			s.grants = append(s.grants, newLot)
		}
		s.remember(p.Key, res, func(ctx context.Context) (any, error) { return s.ledger.Refund(ctx, s.tn, p) })
	}
}

func (s *machine) void(t *rapid.T) {
	if len(s.grants) == 0 {
		t.Skip("no grant yet")
	}
	p := credits.VoidParams{Grant: rapid.SampledFrom(s.grants).Draw(t, "grant"), Key: key("void")}
	res, err := s.ledger.Void(s.ctx, s.tn, p)
	next, mres, merr := s.m.void(p, s.now())
	if s.commit(t, next, res, mres, err, merr) {
		s.remember(p.Key, res, func(ctx context.Context) (any, error) { return s.ledger.Void(ctx, s.tn, p) })
	}
}

func (s *machine) sweep(t *rapid.T) {
	res, err := s.ledger.Sweep(s.ctx, s.tn, credits.SweepParams{})
	require.NoError(t, err)
	next, entries := s.m.sweep(s.now())
	require.Equal(t, entries, res.Entries, "entries the sweep wrote")
	s.m = next
	s.snap()
}

func (s *machine) advance(t *rapid.T) {
	s.clock.Advance(time.Duration(rapid.IntRange(1, 600).Draw(t, "minutes")) * time.Minute)
}

func (s *machine) setLimit(t *rapid.T) {
	p := credits.SetCreditLimitParams{Account: s.pickAccount(t), CreditLimit: rapid.SampledFrom([]int64{0, 30, 100}).Draw(t, "limit")}
	a, err := s.ledger.SetCreditLimit(s.ctx, s.tn, p)
	require.NoError(t, err)
	require.Equal(t, p.CreditLimit, a.CreditLimit)
	s.m.account(p.Account).limit = p.CreditLimit
	s.snap()
}

// retry repeats a call that succeeded, with its key: the first result,
// flagged as a replay, and nothing changes.
func (s *machine) retry(t *rapid.T) {
	if len(s.done) == 0 {
		t.Skip("nothing done yet")
	}
	op := rapid.SampledFrom(s.done).Draw(t, "call")
	got, err := op.retry(s.ctx)
	require.NoError(t, err, "retry of %s", op.key)
	require.Equal(t, withReplay(op.first), got, "retry of %s", op.key)
}

// conflict reuses a key for another request.
func (s *machine) conflict(t *rapid.T) {
	if len(s.done) == 0 {
		t.Skip("nothing done yet")
	}
	op := rapid.SampledFrom(s.done).Draw(t, "call")
	_, err := s.ledger.Spend(s.ctx, s.tn, credits.SpendParams{Account: s.accounts[0], Amount: 1, Reference: "another request", Key: op.key})
	var conflict *credits.IdempotencyConflictError
	require.ErrorAs(t, err, &conflict)
	require.Equal(t, op.key, conflict.Key)
}

func (s *machine) check(t *rapid.T) {
	now := s.now()
	for _, id := range s.accounts {
		got, err := s.ledger.Balance(s.ctx, s.tn, credits.BalanceParams{Account: id, WithLots: true})
		require.NoError(t, err)
		require.Equal(t, s.m.balance(id, now), got, "balance of %s", id)

		var journal []credits.Entry
		for page := (tenancy.Page{Limit: tenancy.MaxPageLimit}); ; {
			list, err := s.ledger.Journal(s.ctx, s.tn, credits.JournalParams{Account: id, Page: page})
			require.NoError(t, err)
			journal = append(journal, list.Items...)
			if list.Next == "" {
				break
			}
			page.Cursor = list.Next
		}
		slices.Reverse(journal)
		for _, e := range journal[max(0, len(journal)-3):] {
			s.cover.add("entry:" + string(e.Kind))
		}
		require.Equal(t, normalize(s.m.account(id).entries), normalize(journal), "journal of %s", id)
	}
	for _, id := range s.holds {
		got, err := s.ledger.GetHold(s.ctx, s.tn, id)
		require.NoError(t, err)
		require.Equal(t, s.m.holdAt(id, now), got)
	}
	if len(s.grants) > 0 {
		id := rapid.SampledFrom(s.grants).Draw(t, "grant to read")
		got, err := s.ledger.GetGrant(s.ctx, s.tn, id)
		require.NoError(t, err)
		require.Equal(t, s.m.grantAt(id, now), got)
	}
	// A balance at a past instant is what a read then said, once every
	// write of that instant counts: the last snapshot by then, settled.
	snap := rapid.SampledFrom(s.history).Draw(t, "past instant")
	at := snap.at.Add(time.Duration(rapid.IntRange(0, 30).Draw(t, "minutes later")) * time.Minute)
	if at.After(now) {
		at = now
	}
	var last snapshot
	for _, h := range s.history {
		if !h.at.After(at) {
			last = h
		}
	}
	for _, id := range s.accounts {
		got, err := s.ledger.BalanceAt(s.ctx, s.tn, credits.BalanceAtParams{Account: id, At: at})
		require.NoError(t, err)
		want := last.m.balance(id, at)
		require.Equal(t, credits.PastBalance{AccountID: id, At: at, Total: want.Total, Held: want.Held, Available: want.Available, Debt: want.Debt}, got, "balance of %s at %s", id, at)
	}
	res, err := s.ledger.Reconcile(s.ctx, s.tn, credits.ReconcileParams{})
	require.NoError(t, err)
	require.True(t, res.OK, "reconcile: %+v", res)
}

func alsoOf(v any) []credits.Entry {
	switch r := v.(type) {
	case credits.CaptureResult:
		return r.Also
	case credits.ReleaseResult:
		return r.Also
	case credits.RefundResult:
		return r.Also
	}
	return nil
}

// requireSameError holds the database's error to the model's: the same
// kind, with the same figures.
func requireSameError(t require.TestingT, db, want error) {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
	if want == nil {
		require.NoError(t, db)
		return
	}
	require.Error(t, db, "want %v", want)
	var wi, di *credits.InsufficientCreditsError
	var wr, dr *credits.RefundExceedsError
	var wh, dh *credits.HoldStateError
	var wn, dn *credits.NotFoundError
	switch {
	case errors.As(want, &wi):
		require.ErrorAs(t, db, &di)
		require.Equal(t, *wi, *di)
	case errors.As(want, &wr):
		require.ErrorAs(t, db, &dr)
		require.Equal(t, *wr, *dr)
	case errors.As(want, &wh):
		require.ErrorAs(t, db, &dh)
		require.Equal(t, *wh, *dh)
	case errors.As(want, &wn):
		require.ErrorAs(t, db, &dn)
		require.Equal(t, wn.What, dn.What)
	default:
		require.ErrorIs(t, db, want)
	}
}

// normalize zeroes the ids of journal entries, which the model does not
// know for entries it writes itself; everything else must match.
func normalize(v any) any {
	switch r := v.(type) {
	case credits.GrantResult:
		if r.Entry != nil {
			e := *r.Entry
			e.ID = credits.EntryID{}
			r.Entry = &e
		}
		return r
	case credits.SpendResult:
		r.Entry.ID = credits.EntryID{}
		return r
	case credits.HoldResult:
		r.Entry.ID = credits.EntryID{}
		return r
	case credits.CaptureResult:
		r.Entry.ID = credits.EntryID{}
		r.Also = normalize(r.Also).([]credits.Entry)
		return r
	case credits.ReleaseResult:
		r.Entry.ID = credits.EntryID{}
		r.Also = normalize(r.Also).([]credits.Entry)
		return r
	case credits.RefundResult:
		r.Entry.ID = credits.EntryID{}
		r.Also = normalize(r.Also).([]credits.Entry)
		return r
	case credits.VoidResult:
		if r.Entry != nil {
			e := *r.Entry
			e.ID = credits.EntryID{}
			r.Entry = &e
		}
		return r
	case []credits.Entry:
		if r == nil {
			return r
		}
		out := make([]credits.Entry, len(r))
		for i, e := range r {
			e.ID = credits.EntryID{}
			out[i] = e
		}
		return out
	}
	return v
}

// withReplay is a first result as its retry returns it.
func withReplay(v any) any {
	switch r := v.(type) {
	case credits.GrantResult:
		r.Replay = true
		return r
	case credits.SpendResult:
		r.Replay = true
		return r
	case credits.HoldResult:
		r.Replay = true
		return r
	case credits.CaptureResult:
		r.Replay = true
		return r
	case credits.ReleaseResult:
		r.Replay = true
		return r
	case credits.RefundResult:
		r.Replay = true
		return r
	case credits.VoidResult:
		r.Replay = true
		return r
	}
	panic(fmt.Sprintf("no replay for %T", v))
}

// burst sends a few spends, holds, captures and releases at once, from
// goroutines, so that they are coalesced into batches: each caller's
// result must be what it would have been alone, in the order the journal
// shows. The successes, applied to the model in journal order, must give
// the same results; each refusal must be what the model says at some
// point of that order (a refusal changes nothing, so where it fell is
// unseen), and before the success of its key, if a same-key twin
// succeeded; a same-key twin after the success returns it as a replay.
func (s *machine) burst(t *rapid.T) {
	type request struct {
		params any
		do     func(ctx context.Context) (any, error)
		twinOf int // the earlier request it repeats, key and all; -1 if none
		res    any
		err    error
	}
	n := rapid.IntRange(2, 10).Draw(t, "burst size")
	reqs := make([]*request, n)
	for i := range reqs {
		kinds := []string{"spend", "spend", "spend", "hold"}
		if len(s.holds) > 0 {
			kinds = append(kinds, "capture", "release")
		}
		if i > 0 {
			kinds = append(kinds, "twin")
		}
		r := &request{twinOf: -1}
		switch rapid.SampledFrom(kinds).Draw(t, "burst request") {
		case "spend":
			p := credits.SpendParams{Account: s.pickAccount(t), Amount: rapid.Int64Range(1, 60).Draw(t, "amount"), Key: key("burst-spend")}
			r.params, r.do = p, func(ctx context.Context) (any, error) { return s.ledger.Spend(ctx, s.tn, p) }
		case "hold":
			p := credits.HoldParams{Account: s.pickAccount(t), Amount: rapid.Int64Range(1, 40).Draw(t, "amount"),
				TTL: time.Duration(rapid.IntRange(1, 360).Draw(t, "ttl minutes")) * time.Minute, Key: key("burst-hold")}
			r.params, r.do = p, func(ctx context.Context) (any, error) { return s.ledger.Hold(ctx, s.tn, p) }
		case "capture":
			p := credits.CaptureParams{Hold: rapid.SampledFrom(s.holds).Draw(t, "hold"), Amount: rapid.Int64Range(1, 60).Draw(t, "amount"), Key: key("burst-capture")}
			r.params, r.do = p, func(ctx context.Context) (any, error) { return s.ledger.Capture(ctx, s.tn, p) }
		case "release":
			p := credits.ReleaseParams{Hold: rapid.SampledFrom(s.holds).Draw(t, "hold"), Key: key("burst-release")}
			r.params, r.do = p, func(ctx context.Context) (any, error) { return s.ledger.Release(ctx, s.tn, p) }
		case "twin":
			of := rapid.IntRange(0, i-1).Draw(t, "twin of")
			for reqs[of].twinOf >= 0 {
				of = reqs[of].twinOf
			}
			r.params, r.do, r.twinOf = reqs[of].params, reqs[of].do, of
		}
		reqs[i] = r
	}
	before := s.ledger.CoalescingStats()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r.res, r.err = r.do(s.ctx)
		}()
	}
	close(start)
	wg.Wait()
	if after := s.ledger.CoalescingStats(); after.Batches > before.Batches {
		s.cover.add(fmt.Sprintf("burst:batched=%d", min(after.Batched-before.Batched, 4)))
		if after.SpanningBatches > before.SpanningBatches {
			s.cover.add("burst:spanning")
		}
	}

	// The fresh successes, in journal order (accounts apart, their entries
	// in sequence); the model follows them one by one.
	entryOf := func(res any) credits.Entry {
		switch r := res.(type) {
		case credits.SpendResult:
			return r.Entry
		case credits.HoldResult:
			return r.Entry
		case credits.CaptureResult:
			return r.Entry
		case credits.ReleaseResult:
			return r.Entry
		}
		panic(fmt.Sprintf("%T", res))
	}
	var fresh []int
	for i, r := range reqs {
		if r.err == nil && !replayOf(r.res) {
			fresh = append(fresh, i)
		}
	}
	slices.SortFunc(fresh, func(a, b int) int {
		ea, eb := entryOf(reqs[a].res), entryOf(reqs[b].res)
		if c := strings.Compare(ea.AccountID.String(), eb.AccountID.String()); c != 0 {
			return c
		}
		return int(ea.Seq - eb.Seq)
	})
	apply := func(m *model, r *request) (*model, any, error) {
		now := s.now()
		switch p := r.params.(type) {
		case credits.SpendParams:
			res, _ := r.res.(credits.SpendResult)
			return m.spend(p, res.Entry.ID, now)
		case credits.HoldParams:
			res, _ := r.res.(credits.HoldResult)
			return m.hold(p, res.Hold.ID, now)
		case credits.CaptureParams:
			res, _ := r.res.(credits.CaptureResult)
			return m.capture(p, res.Entry.ID, now)
		case credits.ReleaseParams:
			return m.release(p, now)
		}
		panic(fmt.Sprintf("%T", r.params))
	}
	states := []*model{s.m}
	position := map[int]int{} // a fresh success's place in the order
	for k, i := range fresh {
		next, mres, merr := apply(states[len(states)-1], reqs[i])
		require.NoError(t, merr, "request %d (%T) succeeded in the ledger", i, reqs[i].params)
		require.Equal(t, normalize(mres), normalize(reqs[i].res), "request %d (%T)", i, reqs[i].params)
		states = append(states, next)
		position[i] = k
		s.cover.add("burst:" + strings.TrimPrefix(fmt.Sprintf("%T", reqs[i].params), "credits.") + ":ok")
	}
	root := func(i int) int {
		if reqs[i].twinOf >= 0 {
			return reqs[i].twinOf
		}
		return i
	}
	freshOfKey := map[int]int{} // key (its first request) -> the request that applied it
	for _, i := range fresh {
		_, dup := freshOfKey[root(i)]
		require.False(t, dup, "key of request %d applied twice", i)
		freshOfKey[root(i)] = i
	}
	for i, r := range reqs {
		applied, ok := freshOfKey[root(i)]
		switch {
		case r.err == nil && !replayOf(r.res):
		case r.err == nil:
			require.True(t, ok, "request %d is a replay of nothing", i)
			require.Equal(t, withReplay(reqs[applied].res), r.res, "request %d replays request %d", i, applied)
			s.cover.add("burst:replay")
		default:
			last := len(states) - 1
			if ok {
				last = position[applied]
			}
			matched := false
			for j := 0; j <= last && !matched; j++ {
				_, _, merr := apply(states[j], r)
				matched = merr != nil && sameError(r.err, merr)
			}
			require.True(t, matched, "request %d (%+v) failed with %v, which the model gives at no point of the order", i, r.params, r.err)
			s.cover.add("burst:" + strings.TrimPrefix(fmt.Sprintf("%T", r.params), "credits.") + ":refused")
		}
	}
	s.m = states[len(states)-1]
	s.snap()
	for _, i := range fresh {
		r := reqs[i]
		switch p := r.params.(type) {
		case credits.SpendParams:
			s.spends = append(s.spends, r.res.(credits.SpendResult).Entry.ID)
			s.remember(p.Key, r.res, r.do)
		case credits.HoldParams:
			s.holds = append(s.holds, r.res.(credits.HoldResult).Hold.ID)
			s.remember(p.Key, r.res, r.do)
		case credits.CaptureParams:
			s.spends = append(s.spends, r.res.(credits.CaptureResult).Entry.ID)
			s.remember(p.Key, r.res, r.do)
		case credits.ReleaseParams:
			s.remember(p.Key, r.res, r.do)
		}
	}
}

// sameError is requireSameError as a question.
func sameError(db, want error) (same bool) {
	p := &probe{}
	defer func() {
		if r := recover(); r != nil && r != p {
			panic(r)
		}
		same = !p.failed
	}()
	requireSameError(p, db, want)
	return
}

// probe is a require.TestingT that records a failure and stops there.
type probe struct{ failed bool }

func (p *probe) Errorf(string, ...any) { p.failed = true }
func (p *probe) FailNow()              { p.failed = true; panic(p) }
