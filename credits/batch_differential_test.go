package credits_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/credits"
	"github.com/meterbase/meterbase/tenancy"
)

// twinPair opens two member accounts with the same credit limit in w's
// workspace 0, for two fresh members.
func twinPair(t *testing.T, w *world, n int, limit int64) [2]credits.AccountID {
	t.Helper()
	ctx := context.Background()
	var out [2]credits.AccountID
	for i := range 2 {
		u, err := tenancy.NewUsers(nil).Create(ctx, w.db.Pool, tenancy.CreateUserParams{Email: fmt.Sprintf("twin%d-%d@example.com", n, i)})
		require.NoError(t, err)
		_, err = tenancy.NewMembers(nil).Add(ctx, w.tenants[0], tenancy.AddMemberParams{User: u.ID, Role: tenancy.RoleMember})
		require.NoError(t, err)
		out[i] = w.account(t, 0, u.ID, limit)
	}
	return out
}

type diffOp struct {
	kind   string // spend, hold, capture, release
	amount int64
	ttl    time.Duration
	hold   int // index of a pre-made hold
	key    int // key number (same number = same key)
	ref    string
}

// labels maps ids to labels common to both twins.
type labels map[string]string

func (lb labels) apply(s string) string {
	return uuidText.ReplaceAllStringFunc(s, func(id string) string {
		if l, ok := lb[id]; ok {
			return l
		}
		return "?" + id
	})
}

func render(v any) string {
	if err, ok := v.(error); ok {
		return fmt.Sprintf("error %T %v", err, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// dbState renders the account's rows, ids labelled.
func dbState(t *testing.T, w *world, account credits.AccountID, lb labels) []string {
	t.Helper()
	ctx := context.Background()
	pool := w.db.RawPool(t)
	var out []string
	q := func(sql string) {
		rows, err := pool.Query(ctx, sql, account.UUID())
		require.NoError(t, err)
		recs, err := pgx.CollectRows(rows, pgx.RowToMap)
		require.NoError(t, err)
		for _, r := range recs {
			b, err := json.Marshal(r)
			require.NoError(t, err)
			out = append(out, lb.apply(string(b)))
		}
	}
	q(`SELECT balance, held, debt, scheduled, entry_seq, credit_limit, settled_at, settle_due_at FROM credit_accounts WHERE account_id = $1`)
	q(`SELECT entry_seq, kind, amount, held_delta, debt_delta, balance_after, held_after, debt_after, grant_id::text, hold_id::text,
	          refunded_entry_id::text, reference, effective_at, recorded_at,
	          (SELECT json_agg(json_build_object('g', l.grant_id::text, 'a', l.amount) ORDER BY l.grant_id) FROM credit_entry_lots l WHERE l.entry_id = e.entry_id) AS lots
	     FROM credit_entries e WHERE account_id = $1 ORDER BY entry_seq`)
	q(`SELECT grant_id::text, amount, remaining, held, journaled, voided_at FROM credit_grants WHERE account_id = $1 ORDER BY created_at, effective_at, grant_id`)
	q(`SELECT hold_id::text, amount, state, captured, expires_at, resolved_at, (SELECT json_agg(json_build_object('g', l.grant_id::text, 'a', l.amount) ORDER BY l.grant_id) FROM credit_hold_lots l WHERE l.hold_id = h.hold_id) FROM credit_holds h WHERE account_id = $1 ORDER BY (SELECT e.entry_seq FROM credit_entries e WHERE e.hold_id = h.hold_id AND e.kind = 'hold')`)
	return out
}

// The same requests applied alone, one by one, on one account, and as one
// batch (credits.RunBatch) on its twin, set up identically, must give the
// same results and leave the same journal, lots, holds and figures.
var fastEligible atomic.Int64

func TestBatchMatchesSerial(t *testing.T) {
	defer func() { t.Logf("spend-only batches all of whose spends succeeded: %d", fastEligible.Load()) }()
	t.Parallel()
	ctx := context.Background()
	w := newWorld(t, 1)
	tn := w.tenants[0]
	seed := uint64(time.Now().UnixNano())
	iterations := 200
	for it := range iterations {
		rng := rand.New(rand.NewPCG(seed, uint64(it)))
		t.Run(fmt.Sprintf("seed%d-%d", seed, it), func(t *testing.T) {
			lb := labels{}
			limit := int64(0)
			if rng.IntN(3) == 0 {
				limit = int64(rng.IntN(50))
			}
			acc := twinPair(t, w, it, limit)
			for _, a := range acc {
				lb[a.String()] = "ACCOUNT"
			}
			both := func(f func(i int, a credits.AccountID) string, label string) {
				for i, a := range acc {
					if id := f(i, a); id != "" {
						lb[id] = label
					}
				}
			}
			base := w.clock.Now()
			// Debt with free lots: spend into debt, then refund an earlier spend.
			if limit > 0 && rng.IntN(2) == 0 {
				var first [2]credits.EntryID
				both(func(i int, a credits.AccountID) string {
					g := w.grant(t, 0, a, 10, func(p *credits.GrantParams) { p.Priority = 5 })
					return g.Grant.ID.String()
				}, "G-debt")
				both(func(i int, a credits.AccountID) string {
					r, err := w.ledger.Spend(ctx, tn, credits.SpendParams{Account: a, Amount: 10, Key: key("pre")})
					require.NoError(t, err)
					first[i] = r.Entry.ID
					return r.Entry.ID.String()
				}, "E-pre1")
				both(func(i int, a credits.AccountID) string {
					r, err := w.ledger.Spend(ctx, tn, credits.SpendParams{Account: a, Amount: limit, Key: key("pre")})
					require.NoError(t, err)
					return r.Entry.ID.String()
				}, "E-pre2")
				both(func(i int, a credits.AccountID) string {
					r, err := w.ledger.Refund(ctx, tn, credits.RefundParams{Entry: first[i], Amount: 10, Key: key("pre")})
					require.NoError(t, err)
					return r.Entry.ID.String()
				}, "E-pre3")
			}
			// Lots: priorities, expiries, some scheduled.
			nLots := 1 + rng.IntN(6)
			for g := range nLots {
				w.clock.Advance(time.Second)
				amount := int64(1 + rng.IntN(40))
				prio := rng.IntN(3)
				var exp, eff time.Time
				if rng.IntN(2) == 0 {
					exp = w.clock.Now().Add(time.Duration(1+rng.IntN(4)) * time.Hour)
				}
				if rng.IntN(6) == 0 {
					eff = w.clock.Now().Add(time.Duration(1+rng.IntN(3)) * time.Hour)
					if !exp.IsZero() && !exp.After(eff) {
						exp = eff.Add(time.Hour)
					}
				}
				both(func(i int, a credits.AccountID) string {
					res := w.grant(t, 0, a, amount, func(p *credits.GrantParams) {
						p.Priority, p.ExpiresAt, p.EffectiveAt = prio, exp, eff
					})
					if res.Entry != nil {
						lb[res.Entry.ID.String()] = fmt.Sprintf("E-grant%d", g)
					}
					return res.Grant.ID.String()
				}, fmt.Sprintf("G%d", g))
			}
			// Holds, some expiring within the test's window.
			nHolds := rng.IntN(4)
			var holds [2][]credits.HoldID
			for h := range nHolds {
				w.clock.Advance(time.Second)
				amount := int64(1 + rng.IntN(15))
				ttl := time.Duration(1+rng.IntN(3)) * 30 * time.Minute
				var ok [2]bool
				both(func(i int, a credits.AccountID) string {
					r, err := w.ledger.Hold(ctx, tn, credits.HoldParams{Account: a, Amount: amount, TTL: ttl, Key: key("pre-hold")})
					if err != nil {
						return ""
					}
					ok[i] = true
					holds[i] = append(holds[i], r.Hold.ID)
					lb[r.Entry.ID.String()] = fmt.Sprintf("E-hold%d", h)
					return r.Hold.ID.String()
				}, fmt.Sprintf("H%d", h))
				require.Equal(t, ok[0], ok[1])
			}
			// Now: maybe past some expiries, maybe exactly at one.
			switch rng.IntN(4) {
			case 0:
				w.clock.Advance(time.Duration(rng.IntN(5)) * 30 * time.Minute)
			case 1:
				w.clock.Advance(time.Hour - time.Since(time.Time{})%1) // an hour on: boundaries at whole hours from base
			}
			_ = base
			// The requests.
			n := 2 + rng.IntN(10)
			spendsOnly := rng.IntN(2) == 0
			var ops []diffOp
			for i := range n {
				op := diffOp{key: i, ref: fmt.Sprintf("r%d", rng.IntN(3))}
				switch r := rng.IntN(10); {
				case r < 6 || len(holds[0]) == 0 && r < 8:
					op.kind, op.amount = "spend", int64(1+rng.IntN(30))
				case r < 8:
					op.kind, op.amount, op.ttl = "hold", int64(1+rng.IntN(20)), time.Duration(1+rng.IntN(60))*time.Minute
				case r < 9 && len(holds[0]) > 0:
					op.kind, op.hold, op.amount = "capture", rng.IntN(len(holds[0])), int64(1+rng.IntN(25))
				default:
					if len(holds[0]) == 0 {
						op.kind, op.amount = "spend", int64(1+rng.IntN(30))
					} else {
						op.kind, op.hold = "release", rng.IntN(len(holds[0]))
					}
				}
				if i > 0 && rng.IntN(8) == 0 { // a same-key twin of an earlier request
					op = ops[rng.IntN(i)]
				}
				if spendsOnly {
					op = diffOp{kind: "spend", amount: int64(1 + rng.IntN(12)), key: i, ref: op.ref}
				}
				ops = append(ops, op)
			}
			params := func(i int, op diffOp) credits.BatchRequest {
				k := fmt.Sprintf("%d-%d-twin%d-%d", seed, it, i, op.key)
				switch op.kind {
				case "spend":
					return credits.SpendParams{Account: acc[i], Amount: op.amount, Reference: op.ref, Key: k}
				case "hold":
					return credits.HoldParams{Account: acc[i], Amount: op.amount, TTL: op.ttl, Reference: op.ref, Key: k}
				case "capture":
					return credits.CaptureParams{Hold: holds[i][op.hold], Amount: op.amount, Reference: op.ref, Key: k}
				default:
					return credits.ReleaseParams{Hold: holds[i][op.hold], Key: k}
				}
			}
			// Alone, on twin 0.
			var alone []any
			for _, op := range ops {
				var v any
				var err error
				switch p := params(0, op).(type) {
				case credits.SpendParams:
					v, err = w.ledger.Spend(ctx, tn, p)
				case credits.HoldParams:
					v, err = w.ledger.Hold(ctx, tn, p)
				case credits.CaptureParams:
					v, err = w.ledger.Capture(ctx, tn, p)
				case credits.ReleaseParams:
					v, err = w.ledger.Release(ctx, tn, p)
				}
				if err != nil {
					v = err
				}
				alone = append(alone, v)
			}
			// Batched, on twin 1.
			var reqs []credits.BatchRequest
			for _, op := range ops {
				reqs = append(reqs, params(1, op))
			}
			batched, err := credits.RunBatch(ctx, w.ledger, tn, acc[1], reqs...)
			require.NoError(t, err)
			require.Len(t, batched, len(alone))

			// Label what the requests made: entries by seq, holds by order.
			for i, a := range acc {
				rows, err := w.db.RawPool(t).Query(ctx, `SELECT entry_id::text, entry_seq FROM credit_entries WHERE account_id = $1`, a.UUID())
				require.NoError(t, err)
				var id string
				var seq int64
				_, err = pgx.ForEachRow(rows, []any{&id, &seq}, func() error {
					if _, ok := lb[id]; !ok {
						lb[id] = fmt.Sprintf("E#%d", seq)
					}
					return nil
				})
				require.NoError(t, err)
				rows, err = w.db.RawPool(t).Query(ctx, `SELECT hold_id::text FROM credit_holds h WHERE account_id = $1 ORDER BY (SELECT e.entry_seq FROM credit_entries e WHERE e.hold_id = h.hold_id AND e.kind = 'hold')`, a.UUID())
				require.NoError(t, err)
				_ = i
				hs, err := pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				for j, h := range hs {
					if _, ok := lb[h]; !ok {
						lb[h] = fmt.Sprintf("H-new-%d", j)
					}
				}
			}
			var desc []string
			for _, op := range ops {
				desc = append(desc, fmt.Sprintf("%+v", op))
			}
			for i := range ops {
				ra := strings.ReplaceAll(lb.apply(render(alone[i])), fmt.Sprintf("twin%d", 0), "twin")
				rb := strings.ReplaceAll(lb.apply(render(batched[i])), fmt.Sprintf("twin%d", 1), "twin")
				require.Equal(t, ra, rb, "request %d of %s", i, strings.Join(desc, "\n"))
			}
			require.Equal(t, dbState(t, w, acc[0], lb), dbState(t, w, acc[1], lb), "requests:\n%s", strings.Join(desc, "\n"))
			if spendsOnly {
				allOK := true
				for _, b := range batched {
					if _, bad := b.(error); bad {
						allOK = false
					}
				}
				if allOK {
					fastEligible.Add(1)
				}
			}
		})
	}
}
