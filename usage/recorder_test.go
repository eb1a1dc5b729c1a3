package usage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

// goroutinesOf counts r's goroutines: those labelled as r's in a
// goroutine profile that run the usage package's code. (Goroutines a
// driver starts from them inherit the label: pgx cancels a query whose
// context ended, and closes its connection, on goroutines of its own that
// finish when the server answers.)
func goroutinesOf(t *testing.T, r *usage.Recorder) int {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, pprof.Lookup("goroutine").WriteTo(&buf, 1))
	n := 0
	for _, block := range strings.Split(buf.String(), "\n\n") {
		if !strings.Contains(block, `"recorder":"`+usage.RecorderID(r)+`"`) || !strings.Contains(block, "meterbase/usage.") {
			continue
		}
		var count int
		_, err := fmt.Sscanf(block, "%d @", &count)
		require.NoError(t, err)
		n += count
	}
	return n
}

func recorderEvent(w world, i int) usage.RecordParams {
	return usage.RecordParams{User: w.shared, OperationType: usage.ChatCompletion, Quantity: int64(i), IdempotencyKey: fmt.Sprint("rec-", i),
		OccurredAt: time.Date(2025, 8, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)}
}

// lockEvents holds a lock on usage_events that keeps every insert waiting,
// until the returned function is called.
func lockEvents(t *testing.T, w world) (release func()) {
	t.Helper()
	tx, err := w.db.RawPool(t).Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `LOCK TABLE usage_events IN SHARE MODE`)
	require.NoError(t, err)
	once := sync.Once{}
	release = func() { once.Do(func() { require.NoError(t, tx.Rollback(ctx)) }) }
	t.Cleanup(release)
	return release
}

func TestRecorderLosesNothingOnClose(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	r, err := s.NewRecorder(w.db.Pool, &usage.RecorderConfig{FlushSize: 100, FlushInterval: time.Hour})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return goroutinesOf(t, r) == 1 }, 5*time.Second, time.Millisecond, "one goroutine runs it")
	const n = 2500
	var wg sync.WaitGroup
	for g := range 10 {
		wg.Go(func() {
			for i := g; i < n; i += 10 {
				ws := w.ws[i%2]
				require.NoError(t, r.Record(ctx, ws, recorderEvent(w, i)))
			}
		})
	}
	wg.Wait()
	require.NoError(t, r.Close(ctx))
	require.Equal(t, n/2, rawCount(t, w.db.Pool, w.ws[0], "true"))
	require.Equal(t, n/2, rawCount(t, w.db.Pool, w.ws[1], "true"))
	st := r.Stats()
	require.Equal(t, int64(n), st.Written)
	require.Zero(t, st.Buffered)
	require.Positive(t, st.Flushes)

	require.ErrorIs(t, r.Record(ctx, w.ws[0], recorderEvent(w, 0)), usage.ErrRecorderClosed)
	require.ErrorIs(t, r.TryRecord(ctx, w.ws[0], recorderEvent(w, 0)), usage.ErrRecorderClosed)
	require.ErrorIs(t, r.Flush(ctx), usage.ErrRecorderClosed)
	require.ErrorIs(t, r.Close(ctx), usage.ErrRecorderClosed)
	// Close has waited for the goroutine to finish its work; it has at most
	// its own return left.
	require.Eventually(t, func() bool { return goroutinesOf(t, r) == 0 }, time.Second, time.Millisecond, "no goroutine outlives Close")
}

func TestRecorderFullBuffer(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	r, err := s.NewRecorder(w.db.Pool, &usage.RecorderConfig{FlushSize: 5, MaxBuffered: 20, FlushInterval: time.Hour})
	require.NoError(t, err)
	release := lockEvents(t, w)

	for i := range 20 {
		require.NoError(t, r.Record(ctx, w.ws[0], recorderEvent(w, i)))
	}
	require.Equal(t, 20, r.Stats().Buffered)
	// Full: TryRecord fails at once, Record waits for room until its
	// context ends, and neither holds the event.
	require.ErrorIs(t, r.TryRecord(ctx, w.ws[0], recorderEvent(w, 20)), usage.ErrRecorderFull)
	start := time.Now()
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = r.Record(short, w.ws[0], recorderEvent(w, 21))
	require.ErrorIs(t, err, usage.ErrRecorderFull)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
	require.Equal(t, 20, r.Stats().Buffered)

	// A Record waiting for room when the lock goes gets it.
	done := make(chan error, 1)
	go func() { done <- r.Record(ctx, w.ws[0], recorderEvent(w, 22)) }()
	time.Sleep(50 * time.Millisecond)
	release()
	require.NoError(t, <-done)
	require.NoError(t, r.Close(ctx))
	require.Equal(t, 21, rawCount(t, w.db.Pool, w.ws[0], "true"))
	// Close has waited for the goroutine to finish its work; it has at most
	// its own return left.
	require.Eventually(t, func() bool { return goroutinesOf(t, r) == 0 }, time.Second, time.Millisecond, "no goroutine outlives Close")
}

func TestRecorderCloseHandsBackWhatItCannotWrite(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	r, err := s.NewRecorder(w.db.Pool, &usage.RecorderConfig{FlushSize: 10, FlushInterval: time.Hour, RetryBackoff: 10 * time.Millisecond})
	require.NoError(t, err)
	release := lockEvents(t, w)
	for i := range 30 {
		require.NoError(t, r.Record(ctx, w.ws[i%3], recorderEvent(w, i)))
	}
	// Records waiting for room when Close comes are refused.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err = r.Close(short)
	var unwritten *usage.UnwrittenError
	require.ErrorAs(t, err, &unwritten)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Len(t, unwritten.Events, 30, "every event accepted is written or handed back")
	keys := map[string]bool{}
	for _, p := range unwritten.Events {
		keys[p.Params.IdempotencyKey] = true
	}
	require.Len(t, keys, 30)
	// Close has waited for the goroutine to finish its work; it has at most
	// its own return left.
	require.Eventually(t, func() bool { return goroutinesOf(t, r) == 0 }, time.Second, time.Millisecond, "no goroutine outlives Close")
	release()
	for i := range 3 {
		require.Zero(t, rawCount(t, w.db.Pool, w.ws[i], "true"))
	}
}

func TestRecorderFlushes(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	var mu sync.Mutex
	var rejected []usage.Rejected
	// By time.
	byTime, err := s.NewRecorder(w.db.Pool, &usage.RecorderConfig{FlushSize: 1000, FlushInterval: 20 * time.Millisecond,
		OnRejected: func(r usage.Rejected) { mu.Lock(); defer mu.Unlock(); rejected = append(rejected, r) }})
	require.NoError(t, err)
	defer byTime.Close(ctx) //nolint:errcheck
	for i := range 3 {
		require.NoError(t, byTime.Record(ctx, w.ws[0], recorderEvent(w, i)))
	}
	require.Eventually(t, func() bool { return rawCount(t, w.db.Pool, w.ws[0], "true") == 3 }, 5*time.Second, 10*time.Millisecond)

	// By size.
	bySize, err := s.NewRecorder(w.db.Pool, &usage.RecorderConfig{FlushSize: 10, FlushInterval: time.Hour})
	require.NoError(t, err)
	defer bySize.Close(ctx) //nolint:errcheck
	for i := range 10 {
		require.NoError(t, bySize.Record(ctx, w.ws[1], recorderEvent(w, i)))
	}
	require.Eventually(t, func() bool { return rawCount(t, w.db.Pool, w.ws[1], "true") == 10 }, 5*time.Second, 10*time.Millisecond)

	// On Flush: everything accepted before it is written when it returns.
	manual, err := s.NewRecorder(w.db.Pool, &usage.RecorderConfig{FlushSize: 1000, FlushInterval: time.Hour})
	require.NoError(t, err)
	for i := range 7 {
		require.NoError(t, manual.TryRecord(ctx, w.ws[2], recorderEvent(w, i)))
	}
	require.Zero(t, rawCount(t, w.db.Pool, w.ws[2], "true"))
	require.NoError(t, manual.Flush(ctx))
	require.Equal(t, 7, rawCount(t, w.db.Pool, w.ws[2], "true"))
	require.NoError(t, manual.Close(ctx))

	// Bad events fail their caller, before they are held.
	bad := recorderEvent(w, 99)
	bad.OperationType = "acme.unknown"
	require.ErrorIs(t, byTime.Record(ctx, w.ws[0], bad), usage.ErrUnknownOperationType)
	bad = recorderEvent(w, 99)
	bad.Quantity = -1
	require.ErrorIs(t, byTime.Record(ctx, w.ws[0], bad), tenancy.ErrInvalidInput)
	require.ErrorIs(t, byTime.Record(ctx, tenancy.WorkspaceID{}, recorderEvent(w, 99)), tenancy.ErrInvalidInput)

	// What the database refuses after the Recorder accepted it (a key
	// reused for another request) is reported, not lost silently.
	conflict := recorderEvent(w, 0)
	conflict.Quantity = 1000
	require.NoError(t, byTime.Record(ctx, w.ws[0], conflict))
	require.NoError(t, byTime.Flush(ctx))
	mu.Lock()
	require.Len(t, rejected, 1)
	require.ErrorIs(t, rejected[0].Err, usage.ErrIdempotencyConflict)
	require.Equal(t, conflict, rejected[0].Params)
	mu.Unlock()
	require.Equal(t, int64(1), byTime.Stats().Rejected)

	for name, cfg := range map[string]usage.RecorderConfig{
		"negative flush size":   {FlushSize: -1},
		"flush size too big":    {FlushSize: usage.MaxBatchSize + 1},
		"buffer below flush":    {FlushSize: 100, MaxBuffered: 10},
		"interval too short":    {FlushInterval: time.Microsecond},
		"backoff out of bounds": {RetryBackoff: time.Hour},
	} {
		_, err := s.NewRecorder(w.db.Pool, &cfg)
		require.ErrorIs(t, err, tenancy.ErrInvalidInput, name)
	}
	_, err = s.NewRecorder(nil, nil)
	require.ErrorIs(t, err, tenancy.ErrInvalidInput)
	require.True(t, errors.Is(usage.ErrRecorderFull, usage.ErrRecorderFull))
}
