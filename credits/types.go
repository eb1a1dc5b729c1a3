package credits

import (
	"encoding/json"
	"time"

	"github.com/meterbase/meterbase/tenancy"
)

// AccountKind says whose an account is.
type AccountKind string

const (
	// AccountWorkspace is the workspace's shared pool; a workspace has one.
	AccountWorkspace AccountKind = "workspace"
	// AccountMember is a member's own account; a member has at most one per
	// workspace.
	AccountMember AccountKind = "member"
)

// Account is a credit account.
type Account struct {
	ID   AccountID   `json:"id"`
	Kind AccountKind `json:"kind"`
	// UserID is the member of a member account; zero for the shared pool,
	// and for the account of a user who has since been deleted (the
	// account and its history stay).
	UserID tenancy.UserID `json:"userId,omitzero"`
	// CreditLimit is the overdraft allowed: 0 is strict (never below zero).
	CreditLimit int64     `json:"creditLimit"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Balance is an account's credits at an instant (At), as they stand then,
// computed at read time: a hold or lot that has expired by then counts as
// expired even if no write or sweep has journaled it yet.
type Balance struct {
	AccountID AccountID `json:"accountId"`
	At        time.Time `json:"at"`
	// Total is the credits of the account's effective lots (held ones
	// included) less its debt: negative while it overdraws.
	Total int64 `json:"total"`
	// Held is the credits active holds earmark.
	Held int64 `json:"held"`
	// Available is Total - Held (negative while the account owes).
	Available int64 `json:"available"`
	// Debt is the overdraft in use.
	Debt int64 `json:"debt"`
	// CreditLimit is the account's overdraft limit.
	CreditLimit int64 `json:"creditLimit"`
	// Spendable is the largest spend that would succeed now: the
	// spendable lots' unheld credits plus what is left of the overdraft
	// (CreditLimit - Debt, when positive).
	Spendable int64 `json:"spendable"`
	// Scheduled is the credits of grants that take effect later; they are
	// in no other figure until then.
	Scheduled int64 `json:"scheduled"`
	// Lots are the account's lots with credits in them, or to come, in
	// burn order (when asked for, BalanceParams.WithLots).
	Lots []Grant `json:"lots,omitempty"`
}

// PastBalance is an account's credits at a past instant.
type PastBalance struct {
	AccountID AccountID `json:"accountId"`
	At        time.Time `json:"at"`
	Total     int64     `json:"total"`
	Held      int64     `json:"held"`
	Available int64     `json:"available"`
	Debt      int64     `json:"debt"`
}

// AccountBalance is an account with its balance, as admin lists show it.
type AccountBalance struct {
	Account
	// Email and DisplayName are the member's, for a member account whose
	// user still belongs to the workspace.
	Email       string  `json:"email,omitempty"`
	DisplayName string  `json:"displayName,omitempty"`
	Balance     Balance `json:"balance"`
}

// Category says where a grant's credits come from.
type Category string

const (
	CategoryPurchase    Category = "purchase"
	CategoryPlan        Category = "plan"
	CategoryPromotional Category = "promotional"
	CategoryTrial       Category = "trial"
	CategoryRefund      Category = "refund" // also the lots refunds make
	CategoryAdjustment  Category = "adjustment"
)

// GrantStatus is where a lot stands.
type GrantStatus string

const (
	GrantScheduled GrantStatus = "scheduled" // not yet effective
	GrantActive    GrantStatus = "active"    // effective, credits left
	GrantDepleted  GrantStatus = "depleted"  // effective, nothing left
	GrantExpired   GrantStatus = "expired"   // past its expiry
	GrantVoided    GrantStatus = "voided"    // voided before it expired
)

// Grant is a lot: the credits one grant added, and what is left of them.
type Grant struct {
	ID        GrantID   `json:"id"`
	AccountID AccountID `json:"accountId"`
	Amount    int64     `json:"amount"`
	// Remaining is the credits still in the lot (held ones included); a
	// lot past its expiry keeps only what active holds earmark.
	Remaining int64 `json:"remaining"`
	// Held is the part active holds earmark.
	Held int64 `json:"held"`
	// Available is the part a spend may take now (Remaining - Held of a
	// live lot, else 0).
	Available int64 `json:"available"`
	// Scheduled is the lot's amount while it is not yet effective.
	Scheduled   int64           `json:"scheduled"`
	Status      GrantStatus     `json:"status"`
	Priority    int             `json:"priority"`
	EffectiveAt time.Time       `json:"effectiveAt"`
	ExpiresAt   *time.Time      `json:"expiresAt,omitempty"`
	Category    Category        `json:"category"`
	Metadata    json.RawMessage `json:"metadata"`
	Reference   string          `json:"reference,omitempty"`
	VoidedAt    *time.Time      `json:"voidedAt,omitempty"`
	CreatedAt   time.Time       `json:"createdAt"`
}

// HoldState is where a hold stands.
type HoldState string

const (
	HoldActive   HoldState = "active"
	HoldCaptured HoldState = "captured"
	HoldReleased HoldState = "released"
	HoldExpired  HoldState = "expired"
)

// Hold is a reservation of credits, earmarked on lots until it resolves.
type Hold struct {
	ID        HoldID    `json:"id"`
	AccountID AccountID `json:"accountId"`
	Amount    int64     `json:"amount"`
	State     HoldState `json:"state"`
	// Captured is the amount captured, once captured.
	Captured   int64      `json:"captured,omitempty"`
	Reference  string     `json:"reference,omitempty"`
	ExpiresAt  time.Time  `json:"expiresAt"`
	ResolvedAt *time.Time `json:"resolvedAt,omitempty"`
	CreatedAt  time.Time  `json:"createdAt"`
	// Lots are the earmarks, in burn order.
	Lots []HoldLot `json:"lots,omitempty"`
}

// HoldLot is the part of a lot a hold earmarks.
type HoldLot struct {
	GrantID GrantID `json:"grantId"`
	Amount  int64   `json:"amount"`
}

// EntryKind is what a journal entry records.
type EntryKind string

const (
	EntryGrant       EntryKind = "grant"        // a lot took effect (+amount)
	EntrySpend       EntryKind = "spend"        // -amount
	EntryHold        EntryKind = "hold"         // held +amount
	EntryCapture     EntryKind = "capture"      // -captured, held -hold amount
	EntryRelease     EntryKind = "release"      // held -hold amount
	EntryHoldExpired EntryKind = "hold_expired" // held -hold amount, at the hold's expiry
	EntryRefund      EntryKind = "refund"       // +amount
	EntryExpire      EntryKind = "expire"       // a lot's credits expired (-amount), at the lot's expiry
	EntryVoid        EntryKind = "void"         // a voided lot's credits ended (-amount)
)

// Entry is one journal entry: an append-only record of one change, with
// the account's figures after it (in journal order).
type Entry struct {
	ID        EntryID   `json:"id"`
	AccountID AccountID `json:"accountId"`
	// Seq numbers the account's entries 1, 2, 3... without gaps.
	Seq  int64     `json:"seq"`
	Kind EntryKind `json:"kind"`
	// Amount is the change to the balance; HeldDelta and DebtDelta the
	// changes to the held credits and to the debt.
	Amount       int64 `json:"amount"`
	HeldDelta    int64 `json:"heldDelta"`
	DebtDelta    int64 `json:"debtDelta"`
	BalanceAfter int64 `json:"balanceAfter"`
	HeldAfter    int64 `json:"heldAfter"`
	DebtAfter    int64 `json:"debtAfter"`
	// GrantID is the lot of a grant, expire or void entry; HoldID the hold
	// of a hold, capture, release or hold_expired entry; RefundOf the
	// spend or capture a refund gives back.
	GrantID   GrantID `json:"grantId,omitzero"`
	HoldID    HoldID  `json:"holdId,omitzero"`
	RefundOf  EntryID `json:"refundOf,omitzero"`
	Reference string  `json:"reference,omitempty"`
	// EffectiveAt is when the change took effect (an expiry: the lot's or
	// hold's expiry, even if written later); RecordedAt when it was
	// written.
	EffectiveAt time.Time `json:"effectiveAt"`
	RecordedAt  time.Time `json:"recordedAt"`
	// Lots is the per-lot trace of a spend or capture (the lots it took
	// from) or a refund (the lots it gave back to), in burn order.
	Lots []EntryLot `json:"lots,omitempty"`
}

// EntryLot is one lot's part in a spend, capture or refund.
type EntryLot struct {
	GrantID  GrantID  `json:"grantId"`
	Amount   int64    `json:"amount"`
	Category Category `json:"category"`
}
