package credits

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/meterbase/meterbase/tenancy"
)

// ReconcileParams says what to reconcile.
type ReconcileParams struct {
	Account AccountID // zero: every account of the workspace
}

// Reconciliation is the outcome of a Reconcile: OK when every account's
// figures agree.
type Reconciliation struct {
	OK       bool                    `json:"ok"`
	Accounts []AccountReconciliation `json:"accounts"`
}

// AccountReconciliation is one account's figures, as stored and as the
// journal and the lots say, and what disagrees (Problems, empty when OK).
type AccountReconciliation struct {
	AccountID AccountID `json:"accountId"`
	// Stored figures.
	Balance int64 `json:"balance"`
	Held    int64 `json:"held"`
	Debt    int64 `json:"debt"`
	// What the journal sums to.
	JournalBalance int64 `json:"journalBalance"`
	JournalHeld    int64 `json:"journalHeld"`
	JournalDebt    int64 `json:"journalDebt"`
	Entries        int64 `json:"entries"`
	// What the lots hold (effective lots' remaining credits) and earmark.
	LotsRemaining int64    `json:"lotsRemaining"`
	LotsHeld      int64    `json:"lotsHeld"`
	OK            bool     `json:"ok"`
	Problems      []string `json:"problems,omitempty"`
}

// Reconcile checks, in one snapshot, for an account or every account of
// the workspace: the journal's sum = the stored balance = the effective
// lots' remaining credits less the debt; the journal's held and debt sums
// = the stored held (= the active holds = the lots' earmarks) and debt;
// the entries are numbered without gaps and the last one's figures are
// the stored ones; every lot's remaining credits are what its entries
// say; every hold is earmarked in full; every spend's, capture's and
// refund's per-lot trace adds up; no spend or capture is refunded beyond
// what it took. It only reads: a host can run it any time.
func (l *Ledger) Reconcile(ctx context.Context, t *tenancy.Tenant, p ReconcileParams) (Reconciliation, error) {
	var account *uuid.UUID
	if !p.Account.IsZero() {
		u := p.Account.UUID()
		account = &u
	}
	rows, err := t.Query(ctx, stmtReconcile, tenancy.Args{"account": account})
	if err != nil {
		return Reconciliation{}, mapError("reconcile", err)
	}
	accounts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AccountReconciliation, error) {
		var r AccountReconciliation
		var scheduled, seq, maxSeq, lastBalance, lastHeld, lastDebt, pending, badFlow, badHeld, holdsHeld, badEarmarks, badTraces, overRefunded int64
		err := row.Scan(&r.AccountID, &r.Balance, &r.Held, &r.Debt, &scheduled, &seq,
			&r.Entries, &maxSeq, &r.JournalBalance, &r.JournalHeld, &r.JournalDebt,
			&lastBalance, &lastHeld, &lastDebt,
			&r.LotsRemaining, &r.LotsHeld, &pending, &badFlow, &badHeld,
			&holdsHeld, &badEarmarks, &badTraces, &overRefunded)
		if err != nil {
			return r, err
		}
		check := func(ok bool, format string, args ...any) {
			if !ok {
				r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
			}
		}
		check(r.JournalBalance == r.Balance, "journal sums to %d, stored balance is %d", r.JournalBalance, r.Balance)
		check(r.LotsRemaining-r.Debt == r.Balance, "lots hold %d less debt %d, stored balance is %d", r.LotsRemaining, r.Debt, r.Balance)
		check(r.JournalHeld == r.Held, "journal's held sums to %d, stored held is %d", r.JournalHeld, r.Held)
		check(r.LotsHeld == r.Held, "lots' held credits sum to %d, stored held is %d", r.LotsHeld, r.Held)
		check(holdsHeld == r.Held, "active holds sum to %d, stored held is %d", holdsHeld, r.Held)
		check(r.JournalDebt == r.Debt, "journal's debt sums to %d, stored debt is %d", r.JournalDebt, r.Debt)
		check(pending == scheduled, "scheduled grants sum to %d, stored scheduled is %d", pending, scheduled)
		check(r.Entries == seq && maxSeq == seq, "%d entries numbered up to %d, the account counts %d", r.Entries, maxSeq, seq)
		if r.Entries > 0 {
			check(lastBalance == r.Balance && lastHeld == r.Held && lastDebt == r.Debt,
				"last entry leaves %d/%d/%d (balance/held/debt), stored %d/%d/%d", lastBalance, lastHeld, lastDebt, r.Balance, r.Held, r.Debt)
		} else {
			check(r.Balance == 0 && r.Held == 0 && r.Debt == 0, "no entries, yet stored figures %d/%d/%d", r.Balance, r.Held, r.Debt)
		}
		check(badFlow == 0, "%d lot(s) whose remaining credits are not what their entries say", badFlow)
		check(badHeld == 0, "%d lot(s) whose held credits are not their active holds' earmarks", badHeld)
		check(badEarmarks == 0, "%d hold(s) not earmarked in full", badEarmarks)
		check(badTraces == 0, "%d entries whose per-lot trace does not add up", badTraces)
		check(overRefunded == 0, "%d entries refunded beyond what they took", overRefunded)
		r.OK = len(r.Problems) == 0
		return r, nil
	})
	if err != nil {
		return Reconciliation{}, mapError("reconcile", err)
	}
	if account != nil && len(accounts) == 0 {
		return Reconciliation{}, &NotFoundError{What: "account", ID: p.Account.String()}
	}
	res := Reconciliation{OK: true, Accounts: accounts}
	for _, a := range accounts {
		res.OK = res.OK && a.OK
	}
	return res, nil
}
