// Package usage is meterbase's usage history: one event per AI operation,
// recorded idempotently one by one, in batches at COPY's speed or through a
// buffered Recorder; listed with filters, chosen columns and pages; summed
// exactly, in milliseconds, from rollups that the database keeps; voided or
// corrected with an audit trail; and deleted after a retention period
// without changing any summary.
//
// # The contract
//
//   - A Service (NewService, with a *Config) is made once and shared. Its
//     methods take ctx, the tenancy.Tenant they act for and a params
//     struct, and return a result struct and a typed error:
//     svc.Record(ctx, acme, usage.RecordParams{...}). Every statement goes
//     through the tenant handle, so a call reaches its workspace's rows
//     only, and row-level security (forced on every usage table) stands
//     behind it. A Tenant over a pgx.Tx joins the host's transaction.
//   - Events are keyed by an OperationType, an entry of the global
//     operation_types table: the built-ins are this package's constants; a
//     host adds its own at startup with RegisterOperationTypes.
//   - Record writes one event in one round trip. With an idempotency key a
//     retry returns the stored event flagged as a replay, a reuse of the key
//     for another request is an *IdempotencyConflictError, and concurrent
//     first attempts record one event (the key is unique per workspace, in
//     the same statement as the event).
//   - RecordBatch copies events into a temporary stage (tenancy.CopyInRows,
//     its rows encoded in COPY's binary format) and inserts them from it,
//     in one transaction: a duplicate, earlier in the batch or already
//     stored, is skipped and counted, never an error for the batch; a bad
//     event is refused on its own, named by its index (an *EventError); the
//     rest is recorded. The insert expects new keys; when one is taken, the
//     transaction is undone and the batch copied again and inserted with ON
//     CONFLICT DO NOTHING, so a batch that repeats stored keys costs one
//     more copy.
//   - A Recorder buffers events in memory and writes them with RecordBatch
//     in the background: bounded (back-pressure, or ErrRecorderFull), by
//     size and by time, and Flush and Close lose nothing they accepted. What
//     a process that dies loses is what it held: see Recorder.
//   - List pages through events by time, either way, with filters and only
//     the columns asked for. Keyset pages (tenancy.Page's cursors, bound to
//     the workspace, the order and the filters) neither skip nor repeat an
//     event while others are recorded; offset pages jump, and may. A keyset
//     page of a list that filters on time alone runs, on a pool, with its
//     generic plan (tenancy's GenericPlan: the ordered scan of
//     usage_events_time_idx, right whatever the workspace, range or cursor),
//     planned once per connection rather than on every call; a list with
//     other filters is planned for its values each time.
//   - Summarize adds up count, failed count, quantity and credits, by
//     window (hour, day, week, month of any IANA time zone, or the whole
//     range) and by dimension (operation type, feature, user, model, unit),
//     from rollups that statement-level triggers on usage_events keep in
//     the same transaction as every insert and update, whatever wrote it.
//     A summary equals the raw GROUP BY of the events at every instant,
//     late ones, corrected ones, voided ones (which count no more) and ones
//     deleted by retention (which still do) included; it reads no event
//     unless the range starts or ends inside a quarter hour. UserTotals
//     gives many users' usage in one query.
//   - Void and Correct change an event, write its audit adjustment
//     (before and after, who, why) and move the rollups by the difference,
//     in one statement; ListAdjustments is the audit trail.
//   - DeleteBefore deletes old events in bounded batches, while recording
//     goes on; the rollups keep them. It first sets the workspace's
//     retention horizon, before which events are refused from then on
//     (ErrRetained): a deleted event's key is gone, and its retry must not
//     count twice.
//   - Bad input fails before any SQL with a tenancy.ErrInvalidInput error
//     (text with NUL bytes or invalid UTF-8 included); what only the
//     database can judge (an unknown operation type, an event before the
//     horizon, or after now + Config.MaxFutureSkew by the database's clock)
//     fails with a typed error and writes nothing. Results marshal to JSON
//     in camelCase, ids as strings, times in RFC 3339, amounts as integers.
//
// # Costs and limits
//
//   - An event counts in 18 rollup rows (the total and five dimensions, at
//     three grains), but a batch's events are added up per quarter hour,
//     operation type, feature, user, model and unit before the rollups are
//     written: a batch of recent events writes a few rows; a backfill that
//     spreads every event over its own quarter hour writes 18 per event.
//   - Concurrent writers of one workspace's recent events update the same
//     rollup rows, and queue on their row locks until each commits: one
//     event per transaction tops out at about the rate of a hot-row update
//     (DOMAIN.md: a few thousand per second); batch, or use a Recorder.
//   - Rollup rows are written in key order, so statements do not deadlock
//     one another; several batches in one host transaction can, and fail
//     with tenancy.ErrRetryable.
//   - A day of a zone whose midnight is not a UTC hour's start (India,
//     Nepal...) is summed from quarter-hour rollups; one whose midnight is
//     (New York...) from hour rollups; UTC's from day rollups. A UTC day
//     or hour in which the zone's clocks move is summed from finer ones:
//     quarter hours where they move at a half hour (Lord Howe), events
//     where they move off a quarter hour (some zones' past).
//   - A summary whose range starts or ends inside a quarter hour reads the
//     events of those minutes, and so, before the retention horizon, sees
//     only the events still stored; summarise retained periods on quarter
//     hours (every window boundary of every zone today is one).
package usage
