package usage

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meterbase/meterbase/internal/pg"
	"github.com/meterbase/meterbase/tenancy"
)

// RecorderConfig configures a Recorder. A nil *RecorderConfig means the
// defaults.
type RecorderConfig struct {
	// FlushSize starts a flush as soon as this many events wait. Default
	// 1000; at most MaxBatchSize.
	FlushSize int
	// FlushInterval flushes whatever waits at least this often. Default 1s.
	FlushInterval time.Duration
	// MaxBuffered bounds the events held in memory, waiting or being
	// written. Record blocks, and TryRecord fails with ErrRecorderFull,
	// while that many are held. Default 10 × FlushSize.
	MaxBuffered int
	// RetryBackoff is the first wait after a flush that failed for a reason
	// that may pass (the database unreachable, a deadlock); it doubles with
	// each failure, up to 30s. Default 100ms.
	RetryBackoff time.Duration
	// OnRejected is told of each event that the database refused after the
	// Recorder accepted it (its operation type deleted, its key reused for
	// another request, its workspace deleted, the retention horizon moved
	// past it). It runs on the flushing goroutine: keep it quick. Default:
	// a warning in Config.Logger.
	OnRejected func(Rejected)
}

// Rejected is an event the database refused after a Recorder accepted it.
type Rejected struct {
	Pending
	Err error
}

// Pending is an event a Recorder accepted, for the workspace it belongs to.
type Pending struct {
	Workspace tenancy.WorkspaceID
	Params    RecordParams
}

// RecorderStats count what a Recorder did.
type RecorderStats struct {
	Buffered   int   // held now, waiting or being written
	Written    int64 // recorded as new events
	Duplicates int64 // already recorded under the same key and request
	Rejected   int64 // refused by the database (see OnRejected)
	Flushes    int64 // statements that wrote a batch
	Failures   int64 // flushes that failed and were retried
}

// Recorder records events in the background, in batches, for hosts that
// record many: Record returns as soon as the event is checked and held in
// memory, and a single goroutine writes what is held with RecordBatch
// (one statement per workspace) when FlushSize events wait, every
// FlushInterval, on Flush and on Close.
//
// Memory is bounded: at most MaxBuffered events are held; beyond that
// Record waits for room (back-pressure) until its context ends, and
// TryRecord fails at once with ErrRecorderFull.
//
// Durability: an event is durable once a flush that holds it commits.
// Until then it lives only in this process's memory: if the process dies,
// the events held (at most MaxBuffered) are lost. A flush that fails for a
// reason that may pass keeps its events and retries with backoff; Flush
// returns its error. Close writes everything held, retrying until its
// context ends, and hands back what it could not write in an
// *UnwrittenError, so that nothing accepted is lost silently. Give events
// idempotency keys, and a host that replays them from its own log after a
// crash records each once.
//
// Events are checked when they are given (the same checks as Record,
// including that the operation type exists), so that a bad one fails its
// caller rather than a flush.
type Recorder struct {
	s          *Service
	db         tenancy.DBTX
	flushSize  int
	interval   time.Duration
	maxHeld    int
	backoff    time.Duration
	onRejected func(Rejected)

	mu       sync.Mutex
	buf      []held
	inflight int
	closed   bool
	space    chan struct{} // closed, and replaced, when room is made

	kick    chan struct{}
	flushes chan flushRequest
	closing chan flushRequest
	done    chan struct{}
	// life ends when the context of Close does, and with it any write the
	// flusher has under way.
	life       context.Context
	endLife    context.CancelFunc
	retryAfter time.Time // the flusher's own: no flush for a kick before it

	written, duplicates, rejected, flushCount, failures atomic.Int64
	id                                                  string
}

type held struct {
	pending Pending
	event   prepared
}

type flushRequest struct {
	ctx   context.Context
	reply chan error
}

// Defaults of RecorderConfig.
const (
	DefaultFlushSize     = 1000
	DefaultFlushInterval = time.Second
	DefaultRetryBackoff  = 100 * time.Millisecond
	maxRetryBackoff      = 30 * time.Second
	// flushTimeout bounds one background flush.
	flushTimeout = time.Minute
)

// NewRecorder starts a Recorder that writes through db, a pool (its
// batches are transactions of their own). Close it to stop its goroutine.
func (s *Service) NewRecorder(db tenancy.DBTX, cfg *RecorderConfig) (*Recorder, error) {
	if pg.IsNil(db) {
		return nil, invalid("db", "is nil")
	}
	var c RecorderConfig
	if cfg != nil {
		c = *cfg
	}
	switch {
	case c.FlushSize == 0:
		c.FlushSize = DefaultFlushSize
	case c.FlushSize < 0 || c.FlushSize > MaxBatchSize:
		return nil, invalid("RecorderConfig.FlushSize", fmt.Sprintf("%d is not between 1 and %d", c.FlushSize, MaxBatchSize))
	}
	switch {
	case c.FlushInterval == 0:
		c.FlushInterval = DefaultFlushInterval
	case c.FlushInterval < time.Millisecond:
		return nil, invalid("RecorderConfig.FlushInterval", fmt.Sprintf("%s is shorter than a millisecond", c.FlushInterval))
	}
	switch {
	case c.MaxBuffered == 0:
		c.MaxBuffered = 10 * c.FlushSize
	case c.MaxBuffered < c.FlushSize:
		return nil, invalid("RecorderConfig.MaxBuffered", fmt.Sprintf("%d is less than FlushSize (%d)", c.MaxBuffered, c.FlushSize))
	}
	switch {
	case c.RetryBackoff == 0:
		c.RetryBackoff = DefaultRetryBackoff
	case c.RetryBackoff < 0 || c.RetryBackoff > maxRetryBackoff:
		return nil, invalid("RecorderConfig.RetryBackoff", fmt.Sprintf("%s is not between 0 and %s", c.RetryBackoff, maxRetryBackoff))
	}
	r := &Recorder{
		s: s, db: db, flushSize: c.FlushSize, interval: c.FlushInterval, maxHeld: c.MaxBuffered, backoff: c.RetryBackoff,
		onRejected: c.OnRejected,
		space:      make(chan struct{}),
		kick:       make(chan struct{}, 1),
		flushes:    make(chan flushRequest),
		closing:    make(chan flushRequest, 1),
		done:       make(chan struct{}),
	}
	if r.onRejected == nil {
		log := s.cfg.logger
		r.onRejected = func(rj Rejected) {
			log.Warn("usage: recorder: event refused", "workspace", rj.Workspace, "key", rj.Params.IdempotencyKey, "error", rj.Err)
		}
	}
	r.life, r.endLife = context.WithCancel(context.Background())
	// Labelled, so that a goroutine profile tells the Recorders apart.
	r.id = fmt.Sprintf("%p", r)
	go pprof.Do(context.Background(), pprof.Labels("meterbase", "usage.Recorder", "recorder", r.id), func(context.Context) { r.run() })
	return r, nil
}

// Record checks an event and holds it for the next flush, waiting while
// the Recorder holds MaxBuffered events. It returns a typed error for a
// bad event (as Record's), ErrRecorderClosed after Close, and, when ctx
// ends while it waits for room, an error that matches both ErrRecorderFull
// and ctx's error.
func (r *Recorder) Record(ctx context.Context, ws tenancy.WorkspaceID, p RecordParams) error {
	h, err := r.check(ctx, ws, p)
	if err != nil {
		return err
	}
	for {
		wait, err := r.hold(h)
		if wait == nil {
			return err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrRecorderFull, ctx.Err())
		}
	}
}

// TryRecord is Record without the wait: ErrRecorderFull when the Recorder
// holds MaxBuffered events.
func (r *Recorder) TryRecord(ctx context.Context, ws tenancy.WorkspaceID, p RecordParams) error {
	h, err := r.check(ctx, ws, p)
	if err != nil {
		return err
	}
	if wait, err := r.hold(h); wait != nil {
		return ErrRecorderFull
	} else {
		return err
	}
}

func (r *Recorder) check(ctx context.Context, ws tenancy.WorkspaceID, p RecordParams) (held, error) {
	if err := ws.Valid(); err != nil {
		return held{}, err
	}
	e, err := r.s.cfg.prepare(p, r.s.cfg.now())
	if err != nil {
		return held{}, err
	}
	if err := r.s.types.check(ctx, r.db, p.OperationType); err != nil {
		return held{}, err
	}
	return held{pending: Pending{Workspace: ws, Params: p}, event: e}, nil
}

// hold takes h if there is room; if not, it returns a channel that is
// closed when there may be.
func (r *Recorder) hold(h held) (<-chan struct{}, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrRecorderClosed
	}
	if len(r.buf)+r.inflight >= r.maxHeld {
		return r.space, nil
	}
	r.buf = append(r.buf, h)
	if len(r.buf) >= r.flushSize {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
	return nil, nil
}

// Flush writes every event held when it was called, and returns when they
// are written, or the error that kept them from it (they stay held, and
// are retried).
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return ErrRecorderClosed
	}
	req := flushRequest{ctx: ctx, reply: make(chan error, 1)}
	select {
	case r.flushes <- req:
	case <-r.done:
		return ErrRecorderClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops taking events, writes every event held, retrying what fails
// until ctx ends, and stops the Recorder's goroutine; it returns once that
// goroutine has. What it could not write comes back in an *UnwrittenError.
// Records waiting for room fail with ErrRecorderClosed. A second Close
// returns ErrRecorderClosed.
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrRecorderClosed
	}
	r.closed = true
	close(r.space) // waiting Records look again, and find it closed
	r.space = make(chan struct{})
	r.mu.Unlock()

	stop := context.AfterFunc(ctx, r.endLife)
	defer stop()
	req := flushRequest{ctx: r.life, reply: make(chan error, 1)}
	r.closing <- req // buffered, and sent once
	err := <-req.reply
	<-r.done
	r.endLife()
	var unwritten *UnwrittenError
	if errors.As(err, &unwritten) {
		unwritten.Err = errors.Join(unwritten.Err, ctx.Err())
	}
	return err
}

// Stats returns what the Recorder has done so far.
func (r *Recorder) Stats() RecorderStats {
	r.mu.Lock()
	held := len(r.buf) + r.inflight
	r.mu.Unlock()
	return RecorderStats{Buffered: held, Written: r.written.Load(), Duplicates: r.duplicates.Load(),
		Rejected: r.rejected.Load(), Flushes: r.flushCount.Load(), Failures: r.failures.Load()}
}

// run is the Recorder's one goroutine: every write happens here, one at a
// time.
func (r *Recorder) run() {
	defer close(r.done)
	ticker := time.NewTicker(r.interval)
	defer ticker.Stop()
	backoff := r.backoff
	background := func() {
		if time.Now().Before(r.retryAfter) {
			return
		}
		ctx, cancel := context.WithTimeout(r.life, flushTimeout)
		defer cancel()
		if err := r.flush(ctx, -1); err != nil {
			r.failures.Add(1)
			r.s.cfg.logger.Warn("usage: recorder: flush failed; retrying", "backoff", backoff, "error", err)
			r.retryAfter = time.Now().Add(backoff)
			backoff = min(2*backoff, maxRetryBackoff)
			return
		}
		backoff = r.backoff
		r.retryAfter = time.Time{}
	}
	for {
		select {
		case <-r.kick:
			background()
		case <-ticker.C:
			background()
		case req := <-r.flushes:
			r.mu.Lock()
			n := len(r.buf)
			r.mu.Unlock()
			req.reply <- r.flush(req.ctx, n)
		case req := <-r.closing:
			req.reply <- r.drain(req.ctx, backoff)
			return
		}
	}
}

// drain writes everything held, retrying with backoff until ctx ends, and
// hands back what is left.
func (r *Recorder) drain(ctx context.Context, backoff time.Duration) error {
	for {
		err := r.flush(ctx, -1)
		if err == nil {
			return nil
		}
		r.failures.Add(1)
		timer := time.NewTimer(backoff)
		select {
		case <-timer.C:
			backoff = min(2*backoff, maxRetryBackoff)
		case <-ctx.Done():
			timer.Stop()
			r.mu.Lock()
			left := make([]Pending, len(r.buf))
			for i, h := range r.buf {
				left[i] = h.pending
			}
			r.buf = nil
			r.mu.Unlock()
			return &UnwrittenError{Events: left, Err: err}
		}
	}
}

// flush writes the first n events held (all when n < 0), by workspace, in
// batches of at most MaxBatchSize. What a failure that may pass leaves
// unwritten goes back to the front of the buffer.
func (r *Recorder) flush(ctx context.Context, n int) error {
	r.mu.Lock()
	if n < 0 || n > len(r.buf) {
		n = len(r.buf)
	}
	taken := slices.Clone(r.buf[:n])
	r.buf = slices.Delete(r.buf, 0, n)
	r.inflight += n
	r.mu.Unlock()
	if n == 0 {
		return nil
	}

	var order []tenancy.WorkspaceID
	groups := map[tenancy.WorkspaceID][]held{}
	for _, h := range taken {
		ws := h.pending.Workspace
		if _, ok := groups[ws]; !ok {
			order = append(order, ws)
		}
		groups[ws] = append(groups[ws], h)
	}
	var failed error
	var unwritten []held
	for _, ws := range order {
		group := groups[ws]
		if failed != nil {
			unwritten = append(unwritten, group...)
			continue
		}
		for len(group) > 0 {
			chunk := group[:min(len(group), MaxBatchSize)]
			if err := r.write(ctx, ws, chunk); err != nil {
				failed = err
				unwritten = append(unwritten, group...)
				break
			}
			group = group[len(chunk):]
		}
	}
	r.mu.Lock()
	r.inflight -= n
	r.buf = append(unwritten, r.buf...)
	close(r.space)
	r.space = make(chan struct{})
	r.mu.Unlock()
	return failed
}

// write records one workspace's chunk. A failure that may pass is
// returned, for the chunk to be retried; one that cannot (the workspace is
// gone, the input is refused) rejects the chunk's events instead.
func (r *Recorder) write(ctx context.Context, ws tenancy.WorkspaceID, chunk []held) error {
	scope, err := tenancy.NewScope(ws)
	if err != nil {
		return err
	}
	t, err := tenancy.NewTenant(r.db, scope)
	if err != nil {
		return err
	}
	batch := make([]indexed, len(chunk))
	for i, h := range chunk {
		batch[i] = indexed{index: i, event: h.event}
	}
	var res BatchResult
	err = r.s.recordPrepared(ctx, t, batch, r.s.cfg.now(), &res)
	if err != nil && !permanent(err) {
		return err
	}
	r.flushCount.Add(1)
	if err != nil {
		for _, h := range chunk {
			r.reject(Rejected{Pending: h.pending, Err: err})
		}
		return nil
	}
	r.written.Add(int64(res.Inserted))
	r.duplicates.Add(int64(res.Duplicates))
	for _, e := range res.Rejected {
		e.Key = chunk[e.Index].pending.Params.IdempotencyKey
		r.reject(Rejected{Pending: chunk[e.Index].pending, Err: e.Err})
	}
	return nil
}

func (r *Recorder) reject(rj Rejected) {
	r.rejected.Add(1)
	r.onRejected(rj)
}

// permanent reports whether a batch's failure would recur however often it
// was retried: the database refused the input itself.
func permanent(err error) bool {
	return errors.Is(err, tenancy.ErrInvalidInput) || errors.Is(err, tenancy.ErrForeignKeyViolation) ||
		errors.Is(err, tenancy.ErrCheckViolation) || errors.Is(err, tenancy.ErrNotNullViolation)
}
