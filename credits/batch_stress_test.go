package credits_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// Under load, every caller gets its own outcome: a success for its own
// amount and key, or a refusal naming its own amount; holds, captures and
// releases mixed in; same-key twins replay.
func TestEveryCallerGetsItsOwnOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn := w.tenants[0]
	l := credits.New(&credits.Config{MaxBatch: 8})
	account := w.account(t, 0, tenancy.UserID{}, 20)
	deadline := time.Now().Add(8 * time.Second)
	var mu sync.Mutex
	var problems []string
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lastKey string
			var lastAmount int64
			for i := 0; time.Now().Before(deadline); i++ {
				if g == 0 && i%5 == 0 {
					w.grant(t, 0, account, 40)
				}
				amount := int64(1 + (g*7+i)%13)
				k := fmt.Sprintf("stress-%d-%d", g, i)
				switch (g + i) % 4 {
				case 0, 1:
					res, err := l.Spend(ctx, tn, credits.SpendParams{Account: account, Amount: amount, Key: k})
					var ie *credits.InsufficientCreditsError
					if err == nil {
						lastKey, lastAmount = k, amount
					}
					switch {
					case err == nil && res.Entry.Amount != -amount:
						mu.Lock()
						problems = append(problems, fmt.Sprintf("%s: spent %d for %d", k, -res.Entry.Amount, amount))
						mu.Unlock()
					case errors.As(err, &ie) && ie.Requested != amount:
						mu.Lock()
						problems = append(problems, fmt.Sprintf("%s: refused %v for %d", k, err, amount))
						mu.Unlock()
					case err != nil && ie == nil:
						mu.Lock()
						problems = append(problems, fmt.Sprintf("%s: %v", k, err))
						mu.Unlock()
					}
				case 2:
					h, err := l.Hold(ctx, tn, credits.HoldParams{Account: account, Amount: amount, TTL: time.Hour, Key: k})
					if err != nil {
						continue
					}
					if h.Hold.Amount != amount {
						mu.Lock()
						problems = append(problems, fmt.Sprintf("%s: hold of %d for %d", k, h.Hold.Amount, amount))
						mu.Unlock()
					}
					if i%2 == 0 {
						c, err := l.Capture(ctx, tn, credits.CaptureParams{Hold: h.Hold.ID, Amount: amount + 1, Key: k + "c"})
						if err == nil && (c.Hold.ID != h.Hold.ID || c.Entry.Amount != -(amount+1)) {
							mu.Lock()
							problems = append(problems, fmt.Sprintf("%s: capture got %+v", k, c))
							mu.Unlock()
						}
					} else {
						r, err := l.Release(ctx, tn, credits.ReleaseParams{Hold: h.Hold.ID, Key: k + "r"})
						if err != nil || r.Hold.ID != h.Hold.ID {
							mu.Lock()
							problems = append(problems, fmt.Sprintf("%s: release got %+v %v", k, r, err))
							mu.Unlock()
						}
					}
				case 3: // a twin of an earlier spend of this goroutine
					pk, pa := lastKey, lastAmount
					if pk == "" {
						continue
					}
					res, err := l.Spend(ctx, tn, credits.SpendParams{Account: account, Amount: pa, Key: pk})
					if err == nil && (!res.Replay || res.Entry.Amount != -pa) {
						mu.Lock()
						problems = append(problems, fmt.Sprintf("twin %s: %+v", pk, res))
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	st := l.CoalescingStats()
	t.Logf("stats: %+v", st)
	require.Empty(t, problems)
	require.NotZero(t, st.Batches)
	w.reconcile(t, 0)
}
