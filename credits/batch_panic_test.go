package credits_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// A panic while a batch is sent (the host's Clock, a tracer, a bug) would
// happen on the coalescer's own goroutine, where no caller could recover
// it, and kill the process; it goes to the batch's callers instead, each
// panicking in its own goroutine as a single call would, where the host
// can recover it (net/http does). The child process below makes the
// host's Clock panic once a batch is about to be sent; it must survive,
// and the queued caller must see the panic.
func TestPanicInABatchGoesToItsCallers(t *testing.T) {
	if os.Getenv("MB_DRAIN_PANIC_CHILD") == "1" {
		drainPanicChild(t)
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicInABatchGoesToItsCallers$", "-test.v")
	cmd.Env = append(os.Environ(), "MB_DRAIN_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the child process died:\n%s", out)
}

func drainPanicChild(t *testing.T) {
	ctx := context.Background()
	// No server is needed: the panic comes before anything is sent.
	pool, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	require.NoError(t, err)
	defer pool.Close()
	scope, err := tenancy.NewScope(tenancy.NewWorkspaceID())
	require.NoError(t, err)
	tn, err := tenancy.NewTenant(pool, scope)
	require.NoError(t, err)
	account, err := credits.ParseAccountID(uuid.Must(uuid.NewV7()).String())
	require.NoError(t, err)

	gate := make(chan struct{})
	var calls atomic.Int32
	l := credits.New(&credits.Config{Clock: func() time.Time {
		switch calls.Add(1) {
		case 1: // the leader's single call waits until a request queues behind it
			<-gate
		case 2: // the batch's
			panic("clock broke once")
		}
		return time.Now()
	}})
	leader := make(chan error, 1)
	go func() {
		_, err := l.Spend(ctx, tn, credits.SpendParams{Account: account, Amount: 1, Key: "leader"})
		leader <- err
	}()
	waitFor(t, "the leader", func() bool { return l.CoalescingStats().Alone == 1 })
	queued := make(chan any, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				queued <- fmt.Sprintf("panic: %v", r)
			}
		}()
		_, err := l.Spend(ctx, tn, credits.SpendParams{Account: account, Amount: 1, Key: "queued"})
		queued <- err
	}()
	waitFor(t, "a queued request", func() bool { return credits.Pending(l) == 1 })
	close(gate)
	require.Error(t, <-leader)
	select {
	case r := <-queued:
		require.Equal(t, "panic: clock broke once", r)
	case <-time.After(10 * time.Second):
		t.Fatal("the queued caller got no answer")
	}
}
