// Package credits is meterbase's credit ledger: exact, idempotent, and
// explained entry by entry by an append-only journal.
//
// A Ledger (New) is made once and shared; its methods take the tenant
// handle they act for and a params struct, and return a result struct and
// a typed error, as tenancy's repositories do. Every state change is one
// call to a PL/pgSQL function of the migration, one statement: the
// account's row is locked, the idempotency key looked up, the account
// settled, the change made and journaled and the key recorded, before the
// statement returns, so no row lock is ever held across the network.
//
// # Units
//
// Credits are int64, in the host's smallest unit. One grant, spend, hold,
// capture or refund moves 1..MaxAmount (10^15); an account holds at most
// MaxAccountCredits (2^60), so no sum the ledger computes overflows.
//
// # Accounts
//
// A workspace has one shared pool (OpenAccount with no user) and at most
// one account per member. A member's account outlives the member's
// removal from the workspace and the user's deletion (its user is then
// cleared): the credits and the journal are the workspace's money. The
// overdraft policy is the credit limit: 0 (the default) is strict, never
// below zero; L lets spends and captures take up to L credits the lots
// lack, as debt.
//
// # Grants (lots)
//
// A grant makes a lot: amount, priority, effective from, optional expiry,
// category, metadata, reference. A grant never takes effect before it is
// made (an earlier EffectiveAt means now). Lots burn in a fixed order:
// priority (lower first), then earliest expiry (lots without one last),
// then oldest (effective from), then id. A lot is spendable at t when it
// is not voided, effective_at <= t and (no expiry or t < expires_at).
//
// When a lot takes effect it first pays the account's debt, if any (its
// remaining credits start at amount - repaid); a scheduled grant does so
// when it takes effect, oldest first. Its grant entry (+amount) is
// effective then: a scheduled grant is journaled when it takes effect.
//
// Void ends a lot's unheld credits at once (a void entry), and any it gets
// back later (a hold released, a refund); what was spent stays spent, and
// a second void changes nothing. Expiry ends a lot's unheld credits at
// its expiry (an expire entry, effective then, written by the next write
// of the account or by Sweep). Credits a hold earmarks outlive the lot's
// expiry or void for the hold: a capture takes them; released, or freed
// by the hold's own expiry, they end at that moment.
//
// # Spends
//
// A spend takes Amount from the spendable lots in burn order, then what
// they lack as debt while the debt stays within the credit limit; or
// nothing, with an *InsufficientCreditsError whose Available is the
// spendable lots' unheld credits plus the overdraft left. Its entry keeps
// the per-lot trace (Entry.Lots: which lots, how much, their category).
//
// # Holds
//
// A hold reserves credits until now + TTL, earmarking spendable lots in
// burn order; it fails at once if the lots cannot cover it (the overdraft
// covers no hold: a reservation earmarks real credits). Capture takes up
// to the held amount from the earmarked lots and releases the rest; more
// than held takes the extra from spendable lots, then debt within the
// limit, or nothing happens and the hold stays as it was. Release frees
// the earmarks. Past its expiry a hold has expired, whether or not it is
// journaled yet (a hold_expired entry, effective at the expiry). A hold
// resolves once: a later capture or release fails with ErrHoldCaptured,
// ErrHoldReleased or ErrHoldExpired, unless it is a retry with the same
// key.
//
// # Refunds
//
// Refund gives back all or part of a spend or capture, never more than is
// left to refund of it. It goes back in reverse burn order: first the
// part that was taken as debt, which pays the debt back (what the account
// no longer owes, because a grant paid it since, comes back as a new lot
// of category refund, without expiry); then the lots, the last taken
// first. Credits given back to a lot that has expired or been voided since
// end again at once; both entries are in the journal.
//
// # Settling, the sweeper and reads
//
// Time-driven changes (a scheduled grant taking effect, a hold or a lot
// expiring) are journaled lazily, in this order, by every write of the
// account before it acts, and by Sweep: (1) lots that took effect, oldest
// first; (2) holds that expired, earliest first, their earmarks freed
// (into a lot dead by then, they end at the hold's expiry); (3) the
// unheld credits of lots that expired, at their expiry. Each entry is
// effective when the change happened. Settling changes no figure a read
// reports: reads compute the same at read time, without writing.
//
// # Balances
//
// Balance reports, at an instant, with holds and lots that have expired
// by then counted as expired and scheduled grants that took effect as
// effective:
//
//   - Total: the effective lots' credits (held ones included) less the
//     debt; negative while the account overdraws.
//   - Held: what active holds earmark. Available = Total - Held.
//   - Debt; CreditLimit.
//   - Spendable: the largest spend that would succeed: the spendable
//     lots' unheld credits plus max(0, CreditLimit - Debt).
//   - Scheduled: credits of grants not yet effective (in no other figure).
//
// BalanceAt(t) is what a Balance read at t would have said once every
// write made at t is counted: from the account's last write on, the stored
// rows read as Balance reads them; before it, the sums of the journal's
// entries whose effective_at is <= t (an expiry journaled later counts
// from the expiry).
//
// # Idempotency
//
// Every state change takes a key (1..255 bytes of UTF-8, no NUL), scoped
// to the workspace and stored durably with the first result, in the
// transaction of the change. The same key with the same request (a hash
// of the operation and its parameters) returns the first result with
// Replay set, and changes nothing; with another request it fails with an
// *IdempotencyConflictError. Refusals are not recorded: a retry after one
// is judged again. A retry waits for the first attempt (they meet on the
// account's lock) and returns its result.
//
// # The journal
//
// Entries are numbered 1, 2, 3... per account without gaps; each carries
// its change to the balance, the held credits and the debt, and the
// three after it in journal order. A refusal writes nothing, not even the
// settling it began. Neither the journal nor its trace can be changed:
// a trigger refuses UPDATE and DELETE (rows go only with their
// workspace). Reconcile checks that the journal, the stored figures, the
// lots, the holds and the traces agree.
//
// # Coalescing
//
// A workspace's members usually spend from one shared pool, so every
// spend changes the same row, and Postgres serialises them on its lock,
// each commit holding it through its WAL flush: a few thousand commits a
// second is the ceiling of one row, however many callers wait. And
// spends spread over many accounts cost the server a statement and a
// commit each, however little each carries. So a Ledger coalesces (group
// commit): an account has at most one spend, hold, capture or release (or
// batch of them) in flight in the process, and a workspace at most
// Config.MaxInFlight (DefaultMaxInFlight, 2); what arrives meanwhile
// queues, and goes as one batch, one statement, one commit, as soon as a
// turn frees up, whatever accounts it touches. A lone caller never waits:
// it is sent at once, as a single call, and there is no timer anywhere.
//
// Each caller still gets its own exact result, as if it had run alone in
// the batch's order (each account's requests in the order they came),
// which the journal shows (entry_seq): its success, its
// own *InsufficientCreditsError when the pool runs dry mid-batch, its own
// replay or *IdempotencyConflictError. One request's failure never fails
// its neighbours. A batch of spends only, whose keys are all new and whose
// total the spendable lots cover, is spent in one set-based statement;
// any other batch runs the requests one by one through the same code as
// single calls, and a request that fails is undone alone.
//
// Cancellation: a caller whose context ends while its request waits in
// the queue leaves without effect (the context's error). One whose request
// was taken into a batch gets an *OutcomeUnknownError (errors.Is
// ErrOutcomeUnknown): the batch goes on for the others and may apply it;
// retry with the same key to learn what happened. A batch whose callers
// have all given up is not sent. The same error can come from any state
// change, coalesced or not, whose answer was lost.
//
// If a batch fails whole (a lost connection, say), its callers run their
// requests alone, with their keys, at once, and the batch's turn lasts
// until they have answered or given up, so nothing queued later on its
// accounts overtakes them (among themselves they race, as the concurrent
// callers they are). If the batch did commit, such an answer is a replay
// (Replay means the key had been applied before this answer, perhaps by
// this call's own lost attempt). A call that could not connect sent
// nothing: its error is the connection's, not ErrOutcomeUnknown; but a
// fallback that cannot connect after a batch whose outcome is unknown
// (it may have committed) is ErrOutcomeUnknown. A panic while a
// batch is sent (a host's Clock, say) goes to each of its callers, in
// their own goroutines.
//
// What coalesces: calls through a handle over a *pgxpool.Pool (a handle
// bound to a transaction runs alone: its statements are its caller's), on
// the same pool, workspace, scope user and row-level security setting.
// A batch over several accounts locks them in one order (their queue
// locks' keys, then their ids), as every batch does, so batches of several processes never deadlock
// each other (a host transaction that changes several accounts in
// another order may: Postgres then fails one of the two, and a batch that
// fails so is retried call by call). A batch is sent with its first caller's handle and the
// values of its first caller's context (a tracer's span, say), so calls
// of different scope users do not share one: a host's own row-level
// security policies may read the user. The ledger's statements read only
// the workspace, so for the members of a workspace to share batches on
// its pool, spend through a workspace-scoped handle (tenancy.NewScope).
// A capture or release joins the batches when this Ledger made
// the hold (it remembers the last 65,536 holds' accounts); otherwise it
// runs alone. Grants, refunds, voids and sweeps always run alone: they are
// rare next to spends. Each process coalesces its own callers; several
// processes spending on one account stay exact (their batches queue on
// the account's lock in Postgres), and each still gains from its own
// batches.
//
// Knobs: Config.NoCoalescing turns it off; Config.MaxBatch bounds a batch
// (DefaultMaxBatch, 32; at most 32 accounts); Config.MaxInFlight bounds a
// workspace's statements in flight, but for the fallbacks of a failed batch (about the database server's cores is
// best). Ledger.CoalescingStats reports how many requests
// ran alone and in batches, the batch sizes, the batches over several
// accounts, fallbacks and queue waits.
// The README gives the measured figures.
//
// # Transactions
//
// With a handle over a pool, each call is its own transaction. With a
// handle over the host's pgx.Tx, the call joins it, and the account stays
// locked until the host commits; a refusal is an error in that
// transaction, as any failed statement is: make the call inside the
// handle's InTx (a savepoint) to keep the transaction usable after it.
package credits
