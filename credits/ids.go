package credits

import "github.com/meterbase/meterbase/tenancy"

type accountKind struct{}

func (accountKind) IDKind() string { return "credit account" }

type grantKind struct{}

func (grantKind) IDKind() string { return "grant" }

type holdKind struct{}

func (holdKind) IDKind() string { return "hold" }

type entryKind struct{}

func (entryKind) IDKind() string { return "journal entry" }

// AccountID identifies a credit account.
type AccountID = tenancy.ID[accountKind]

// GrantID identifies a grant, the lot of credits it made.
type GrantID = tenancy.ID[grantKind]

// HoldID identifies a hold.
type HoldID = tenancy.ID[holdKind]

// EntryID identifies a journal entry.
type EntryID = tenancy.ID[entryKind]

// ParseAccountID parses an account id in any of the usual UUID spellings.
func ParseAccountID(s string) (AccountID, error) { return tenancy.ParseID[accountKind](s) }

// ParseGrantID parses a grant id.
func ParseGrantID(s string) (GrantID, error) { return tenancy.ParseID[grantKind](s) }

// ParseHoldID parses a hold id.
func ParseHoldID(s string) (HoldID, error) { return tenancy.ParseID[holdKind](s) }

// ParseEntryID parses a journal entry id.
func ParseEntryID(s string) (EntryID, error) { return tenancy.ParseID[entryKind](s) }
