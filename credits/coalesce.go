package credits

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meterbase/meterbase/internal/pg"
	"github.com/meterbase/meterbase/tenancy"
)

// Coalescing (group commit). A hot account's ceiling is its commits: each
// holds the account's row lock through its WAL flush. And a busy
// workspace's ceiling is its server's CPU, which each statement and each
// commit costs however little they carry. So an account has at most one
// request or batch in flight in this process, and a workspace (through one
// pool, for one scope user) at most MaxInFlight: a request that cannot go
// at once queues, and what queued goes together as one batch, one
// statement, one commit, as soon as a turn frees up: a lone caller waits
// for nothing. The batch function (migration 0008) runs each request
// through the same code as a single call, in queue order, and answers each
// with its own outcome; a batch over several accounts calls it for each in
// turn (sql/batches.sql).

const (
	// DefaultMaxBatch is the most requests a batch holds unless
	// Config.MaxBatch says otherwise.
	DefaultMaxBatch = 32
	// MaxMaxBatch bounds Config.MaxBatch: a failed request in a batch
	// makes the batch function run the others again, so a batch's worst
	// case grows with its size squared.
	MaxMaxBatch = 256
	// DefaultMaxInFlight is how many requests or batches of one
	// workspace may be in flight at once unless Config.MaxInFlight says
	// otherwise.
	DefaultMaxInFlight = 2
	// maxRememberedHolds bounds the holds whose account the Ledger
	// remembers for their capture or release.
	maxRememberedHolds = 1 << 16
	// maxBatchAccounts bounds the accounts of one batch: each may take a
	// subtransaction (a pass of meterbase_credit_batch), and a
	// transaction with more than 64 of them makes every snapshot on the
	// server slower until it ends.
	maxBatchAccounts = 32
)

var (
	stmtBatch   = statement("batch")
	stmtBatches = statement("batches")
)

// operation is one state change that may be coalesced with others on its
// account.
type operation struct {
	kind      string    // "spend", "hold", "capture", "release"
	account   uuid.UUID // the account it changes; zero if not known
	hold      uuid.UUID // a capture's or release's hold
	amount    int64
	ttlUS     int64
	reference string
	key       string
	hash      []byte

	// Set when it queues.
	ctx    context.Context
	t      *tenancy.Tenant
	queued time.Time
	sent   bool // guarded by coalescer.mu
	done   chan delivery
}

// delivery is what a queued operation learns: its outcome in the batch,
// or that the batch failed whole and it must run alone.
type delivery struct {
	out *outcome
	// alone: the batch failed whole (unknown says whether it may have
	// committed, cause why).
	alone   bool
	unknown bool
	cause   error
	// ran, with alone, is closed once the caller has run its request
	// alone: the batch's turn lasts until its callers have.
	ran chan struct{}
	// panicked is what sending the batch panicked with: the callers panic
	// with it, each in its own goroutine, as a single call would have.
	panicked any
}

// outcome is one row of meterbase_credit_batch.
type outcome struct {
	errCode, errMessage, errDetail, errConstraint, errTable *string

	entryID                                 *uuid.UUID
	seq, debtDelta, balanceAfter, heldAfter *int64
	debtAfter                               *int64
	reference                               *string
	effectiveAt, recordedAt                 *time.Time
	lotIDs                                  []uuid.UUID
	lotAmounts                              []int64
	lotCategories                           []string
	amount                                  *int64
	replay                                  *bool
	result                                  []byte
}

// err is the operation's own error, as the single call would have
// returned it, or nil.
func (o *outcome) err(op string) error {
	if o.errCode == nil {
		return nil
	}
	pgErr := &pgconn.PgError{Severity: "ERROR", Code: *o.errCode, Message: deref(o.errMessage),
		Detail: deref(o.errDetail), ConstraintName: deref(o.errConstraint), TableName: deref(o.errTable)}
	return mapError(op, pg.MapError(pgErr))
}

// spend is a spend's result, or its error.
func (o *outcome) spend(account AccountID) (SpendResult, error) {
	if err := o.err("spend"); err != nil {
		return SpendResult{}, err
	}
	return SpendResult{Replay: deref(o.replay), Entry: spendEntry(account, deref(o.entryID), deref(o.seq), deref(o.debtDelta),
		deref(o.balanceAfter), deref(o.heldAfter), deref(o.debtAfter), deref(o.reference), deref(o.effectiveAt),
		deref(o.recordedAt), o.lotIDs, o.lotAmounts, o.lotCategories, deref(o.amount))}, nil
}

// decode is the operation's JSON result, or its error.
func (o *outcome) decode(op string, out any) error {
	if err := o.err(op); err != nil {
		return err
	}
	return decodeResult(op, o.result, out)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// queueKey names the requests that may share a batch: the same pool, the
// same workspace and row-level security setting (the batch runs with the
// first one's handle, and the ledger's statements use nothing else of it).
type queueKey struct {
	pool      *pgxpool.Pool
	rls       bool
	workspace uuid.UUID
	// The batch runs with its first request's handle, so with its user's
	// meterbase.user_id: the ledger's own statements and policies read
	// only the workspace, but a host's policies may read the user.
	user uuid.UUID
}

type queue struct {
	pending  []*operation
	busy     map[uuid.UUID]bool // accounts with a request or a batch in flight
	inFlight int                // requests and batches in flight
}

type holdKey struct {
	workspace uuid.UUID
	hold      uuid.UUID
}

type coalescer struct {
	l           *Ledger
	maxBatch    int
	maxInFlight int

	// beforeSend, a test hook, runs when a batch is about to be sent.
	beforeSend func()

	mu     sync.Mutex
	queues map[queueKey]*queue
	holds  map[holdKey]uuid.UUID // a hold's account, for its capture or release
	stats  CoalescingStats
}

func newCoalescer(l *Ledger) *coalescer {
	n := l.cfg.MaxBatch
	switch {
	case n <= 0:
		n = DefaultMaxBatch
	case n > MaxMaxBatch:
		n = MaxMaxBatch
	}
	inFlight := l.cfg.MaxInFlight
	if inFlight <= 0 {
		inFlight = DefaultMaxInFlight
	}
	return &coalescer{l: l, maxBatch: n, maxInFlight: inFlight, queues: make(map[queueKey]*queue), holds: make(map[holdKey]uuid.UUID)}
}

// CoalescingStats says how the Ledger's requests went, since New.
type CoalescingStats struct {
	// Alone counts the spends, holds, captures and releases that ran as
	// single calls: nothing else was in flight on their account and a
	// turn of their workspace was free, their
	// handle belongs to a transaction, a capture or release of a hold
	// this Ledger did not make, or coalescing is off.
	Alone int64
	// Batches counts the batches sent; Batched the requests in them;
	// SpanningBatches the batches over more than one account.
	Batches         int64
	Batched         int64
	SpanningBatches int64
	// BatchSizes[i] counts the batches of 2^i to 2^(i+1)-1 requests:
	// 1, 2–3, 4–7, 8–15, 16–31, 32–63, 64–127, 128–256.
	BatchSizes [8]int64
	// Fallbacks counts requests whose batch failed whole (a lost
	// connection, say) and that then ran alone, within the batch's turn.
	Fallbacks int64
	// QueueWait sums, over batched requests, the time from queueing to
	// being sent; MaxQueueWait is the longest.
	QueueWait    time.Duration
	MaxQueueWait time.Duration
}

// CoalescingStats returns the counters of the Ledger's coalescing.
func (l *Ledger) CoalescingStats() CoalescingStats {
	c := l.co
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// do runs op with its workspace's other requests, or alone, through the
// caller's own single call. It returns op's outcome in a batch, or nil
// and the error alone returned.
func (c *coalescer) do(ctx context.Context, t *tenancy.Tenant, op *operation, alone func() error) (*outcome, error) {
	pool := t.Pool()
	if c.l.cfg.NoCoalescing || pool == nil || op.account == uuid.Nil {
		c.count(func(s *CoalescingStats) { s.Alone++ })
		return nil, alone()
	}
	scope := t.Scope()
	key := queueKey{pool: pool, rls: t.RowLevelSecurity(), workspace: scope.Workspace().UUID(), user: scope.User().UUID()}
	c.mu.Lock()
	q := c.queues[key]
	if q == nil {
		q = &queue{busy: make(map[uuid.UUID]bool)}
		c.queues[key] = q
	}
	if !q.busy[op.account] && q.inFlight < c.maxInFlight && len(q.pending) == 0 {
		// A free turn and nothing waiting: the caller goes at once,
		// alone, and whoever comes meanwhile queues.
		q.busy[op.account] = true
		q.inFlight++
		c.stats.Alone++
		c.mu.Unlock()
		defer c.finish(key, q, []*operation{op}) // even if alone panics: the queue must not stall
		return nil, alone()
	}
	op.ctx, op.t, op.queued, op.done = ctx, t, time.Now(), make(chan delivery, 1)
	q.pending = append(q.pending, op)
	c.schedule(key, q) // a free turn and a free account: it goes now
	c.mu.Unlock()

	select {
	case d := <-op.done:
		return c.delivered(ctx, op, d, alone)
	case <-ctx.Done():
	}
	c.mu.Lock()
	if !op.sent {
		q.pending = slices.DeleteFunc(q.pending, func(x *operation) bool { return x == op })
		c.schedule(key, q)
		c.mu.Unlock()
		return nil, fmt.Errorf("credits: %s: %w", op.kind, ctx.Err())
	}
	c.mu.Unlock()
	select {
	case d := <-op.done: // it arrived as the context ended
		return c.delivered(ctx, op, d, alone)
	default:
	}
	return nil, &OutcomeUnknownError{Operation: op.kind, Key: op.key, Err: ctx.Err()}
}

func (c *coalescer) delivered(ctx context.Context, op *operation, d delivery, alone func() error) (*outcome, error) {
	if d.panicked != nil {
		panic(d.panicked)
	}
	if !d.alone {
		return d.out, nil
	}
	defer close(d.ran) // even if alone panics: the batch's turn must end
	if d.unknown && ctx.Err() != nil {
		return nil, &OutcomeUnknownError{Operation: op.kind, Key: op.key, Err: d.cause}
	}
	// The batch failed whole; the request runs alone, with its key: if
	// the batch did commit, that is a replay of what it did.
	c.count(func(s *CoalescingStats) { s.Fallbacks++ })
	err := alone()
	if err != nil && d.unknown && !errors.Is(err, ErrOutcomeUnknown) && notSent(err) {
		// The call alone never reached the server, so it cannot tell
		// what the batch, which may have committed, did.
		return nil, &OutcomeUnknownError{Operation: op.kind, Key: op.key, Err: errors.Join(d.cause, err)}
	}
	return nil, err
}

// notSent reports whether a failed call never reached the server.
func notSent(err error) bool {
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	return pgconn.SafeToRetry(err)
}

// finish ends the turn of a request or a batch: its accounts are free
// again, and what queued behind them goes.
func (c *coalescer) finish(key queueKey, q *queue, ops []*operation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, op := range ops {
		delete(q.busy, op.account)
	}
	q.inFlight--
	c.schedule(key, q)
}

// schedule sends batches of what waits, while turns are free and some of
// it is on accounts with nothing in flight; it forgets the queue once it
// is idle. c.mu is held.
func (c *coalescer) schedule(key queueKey, q *queue) {
	for q.inFlight < c.maxInFlight {
		batch, accounts := c.take(q)
		if len(batch) == 0 {
			break
		}
		q.inFlight++
		now := time.Now()
		c.stats.Batches++
		if accounts > 1 {
			c.stats.SpanningBatches++
		}
		c.stats.Batched += int64(len(batch))
		c.stats.BatchSizes[min(bitLen(len(batch))-1, len(c.stats.BatchSizes)-1)]++
		for _, op := range batch {
			q.busy[op.account] = true
			op.sent = true
			wait := now.Sub(op.queued)
			c.stats.QueueWait += wait
			c.stats.MaxQueueWait = max(c.stats.MaxQueueWait, wait)
		}
		go c.run(key, q, batch)
	}
	if q.inFlight == 0 && len(q.pending) == 0 {
		delete(c.queues, key)
	}
}

// take removes from the queue the next batch: the waiting requests, in
// queue order, on accounts with nothing in flight, up to maxBatch of them
// on up to maxBatchAccounts accounts. A request left behind keeps the
// later ones of its account behind it, so each account's requests run in
// the order they came. It returns the batch and how many accounts it
// touches. c.mu is held.
func (c *coalescer) take(q *queue) ([]*operation, int) {
	var batch []*operation
	accounts := make(map[uuid.UUID]bool)
	left := make(map[uuid.UUID]bool)
	rest := q.pending[:0]
	for _, op := range q.pending {
		a := op.account
		if len(batch) < c.maxBatch && !q.busy[a] && !left[a] && (accounts[a] || len(accounts) < maxBatchAccounts) {
			accounts[a] = true
			batch = append(batch, op)
			continue
		}
		left[a] = true
		rest = append(rest, op)
	}
	clear(q.pending[len(rest):])
	q.pending = rest
	return batch, len(accounts)
}

// run sends one batch, then ends its turn.
func (c *coalescer) run(key queueKey, q *queue, batch []*operation) {
	defer c.finish(key, q, batch)
	if c.beforeSend != nil {
		c.beforeSend()
	}
	c.send(batch)
}

func bitLen(n int) int {
	b := 0
	for ; n > 0; n >>= 1 {
		b++
	}
	return b
}

// send runs one batch and delivers each operation its outcome.
func (c *coalescer) send(batch []*operation) {
	delivered := false
	defer func() {
		// A panic here (the host's Clock, a tracer, a bug) is on no
		// caller's goroutine: it goes to each caller, and the queue goes on.
		if r := recover(); r != nil && !delivered {
			for _, op := range batch {
				op.done <- delivery{panicked: r}
			}
		}
	}()
	ctx, stop := batchContext(batch)
	defer stop()
	sorted, outs, err := c.l.runInLockOrder(ctx, batch[0].t, batch)
	delivered = true
	if err != nil {
		// The batch failed whole: its callers run their requests alone,
		// at once, and its turn lasts until they have, so nothing queued
		// later on its accounts overtakes them. (One after another would
		// keep each account's order among them too, but a turn would then
		// last as long as all their calls: under faults, queue waits grew
		// sevenfold.)
		unknown := outcomeUnknown(err)
		ran := make([]chan struct{}, len(batch))
		for i, op := range batch {
			ran[i] = make(chan struct{})
			op.done <- delivery{alone: true, unknown: unknown, cause: err, ran: ran[i]}
		}
		for i, op := range batch {
			select {
			case <-ran[i]:
			case <-op.ctx.Done(): // the caller may have left without reading
			}
		}
		return
	}
	for i, op := range sorted {
		op.done <- delivery{out: &outs[i]}
	}
}

// runInLockOrder sends a batch grouped by account, the accounts in lock
// order (so every batch locks them, and none waits on another in a
// cycle), and returns the operations in that order with their outcomes.
func (l *Ledger) runInLockOrder(ctx context.Context, t *tenancy.Tenant, batch []*operation) ([]*operation, []outcome, error) {
	sorted := slices.Clone(batch)
	slices.SortStableFunc(sorted, func(a, b *operation) int { return lockOrder(a.account, b.account) })
	first, last := sorted[0].account, sorted[len(sorted)-1].account
	if first == last {
		outs, err := l.runBatch(ctx, t, first, sorted)
		return sorted, outs, err
	}
	outs, err := l.runBatches(ctx, t, sorted)
	return sorted, outs, err
}

// runBatch sends a batch of operations on account as one statement and
// returns their outcomes, in order.
func (l *Ledger) runBatch(ctx context.Context, t *tenancy.Tenant, account uuid.UUID, batch []*operation) ([]outcome, error) {
	args := batchArgs(batch)
	args["account"], args["now"] = account, l.now()
	return l.readOutcomes(ctx, t, stmtBatch, args, len(batch))
}

// runBatches sends a batch of operations on several accounts, grouped by
// account in lock order, as one statement, and returns their outcomes, in
// order.
func (l *Ledger) runBatches(ctx context.Context, t *tenancy.Tenant, batch []*operation) ([]outcome, error) {
	var accounts []uuid.UUID
	var firsts, lasts []int32 // 1-based, inclusive: SQL's array slices
	for i, op := range batch {
		if i == 0 || op.account != batch[i-1].account {
			accounts = append(accounts, op.account)
			firsts = append(firsts, int32(i+1))
			lasts = append(lasts, 0)
		}
		lasts[len(lasts)-1] = int32(i + 1)
	}
	args := batchArgs(batch)
	args["accounts"], args["firsts"], args["lasts"], args["now"] = accounts, firsts, lasts, l.now()
	return l.readOutcomes(ctx, t, stmtBatches, args, len(batch))
}

// batchArgs are the request arrays of a batch statement.
func batchArgs(batch []*operation) tenancy.Args {
	n := len(batch)
	kinds, holds := make([]string, n), make([]uuid.UUID, n)
	amounts, ttls := make([]int64, n), make([]int64, n)
	references, keys, hashes := make([]string, n), make([]string, n), make([][]byte, n)
	for i, op := range batch {
		kinds[i], holds[i], amounts[i], ttls[i] = op.kind, op.hold, op.amount, op.ttlUS
		references[i], keys[i], hashes[i] = op.reference, op.key, op.hash
	}
	return tenancy.Args{"kinds": kinds, "holds": holds, "amounts": amounts, "ttls_us": ttls,
		"references": references, "keys": keys, "hashes": hashes}
}

// readOutcomes runs a batch statement and reads its n outcomes.
func (l *Ledger) readOutcomes(ctx context.Context, t *tenancy.Tenant, s *tenancy.Statement, args tenancy.Args, n int) ([]outcome, error) {
	rows, err := t.Query(ctx, s, args)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	outs := make([]outcome, 0, n)
	for rows.Next() {
		var o outcome
		if err := rows.Scan(&o.errCode, &o.errMessage, &o.errDetail, &o.errConstraint, &o.errTable, &o.entryID, &o.seq,
			&o.debtDelta, &o.balanceAfter, &o.heldAfter, &o.debtAfter, &o.reference, &o.effectiveAt,
			&o.recordedAt, &o.lotIDs, &o.lotAmounts, &o.lotCategories, &o.amount, &o.replay, &o.result); err != nil {
			return nil, err
		}
		outs = append(outs, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(outs) != n {
		return nil, fmt.Errorf("credits: a batch of %d requests returned %d outcomes", n, len(outs))
	}
	return outs, nil
}

// batchContext is the context a batch runs under: it carries the first
// request's values, and ends when every request's context has ended (one
// caller giving up must not fail its neighbours).
func batchContext(batch []*operation) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	var live atomic.Int64
	live.Store(int64(len(batch)))
	stops := make([]func() bool, len(batch))
	leave := func() {
		if live.Add(-1) == 0 {
			cancel()
		}
	}
	for i, op := range batch {
		if op.ctx.Err() != nil { // gone already: the batch must know now
			leave()
			stops[i] = func() bool { return false }
			continue
		}
		stops[i] = context.AfterFunc(op.ctx, leave)
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

func (c *coalescer) count(f func(*CoalescingStats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// rememberHold notes a hold's account, so that its capture or release can
// join the account's batches.
func (c *coalescer) rememberHold(t *tenancy.Tenant, hold HoldID, account AccountID) {
	if c.l.cfg.NoCoalescing {
		return // no batch to join
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.holds) >= maxRememberedHolds {
		for k := range c.holds { // an arbitrary one goes
			delete(c.holds, k)
			break
		}
	}
	c.holds[holdKey{t.Scope().Workspace().UUID(), hold.UUID()}] = account.UUID()
}

// holdAccount returns the account of a hold this Ledger made, or zero; a
// resolving request forgets it (a second resolution runs alone).
func (c *coalescer) holdAccount(t *tenancy.Tenant, hold HoldID) uuid.UUID {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := holdKey{t.Scope().Workspace().UUID(), hold.UUID()}
	account := c.holds[k]
	delete(c.holds, k)
	return account
}

// outcomeUnknown reports whether a failed call may nonetheless have
// committed: it was sent, and then the connection or the context ended
// before its answer came. A statement the server answered with an error
// did not commit, unless the error ends the session (the answer may have
// been lost with it). A call that could not connect sent nothing.
func outcomeUnknown(err error) bool {
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return false
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
			return true
		}
		return len(pgErr.Code) == 5 && pgErr.Code[:2] == "08" // connection exceptions
	}
	if _, ok := errors.AsType[*tenancy.InvalidInputError](err); ok {
		return false
	}
	return !pgconn.SafeToRetry(err)
}

// lockOrder orders accounts by their queue lock's key (the id's last 8
// bytes), then by id: the order batches take the locks in.
func lockOrder(a, b uuid.UUID) int {
	if c := bytes.Compare(a[8:], b[8:]); c != 0 {
		return c
	}
	return bytes.Compare(a[:], b[:])
}
