package credits

import (
	"context"
	"fmt"

	"github.com/meterbase/meterbase/tenancy"
)

// StatementSQL returns every prepared statement of the package by name, as
// sent, for the completeness test.
func StatementSQL() map[string]string {
	out := make(map[string]string, len(statements))
	for name, s := range statements {
		out[name] = s.SQL()
	}
	return out
}

// StatementParams returns the names of a statement's parameters, in the
// order they are numbered after the handle's own.
func StatementParams(name string) []string { return statements[name].Params() }

// BatchRequest is one request of a batch sent by RunBatch: a SpendParams,
// HoldParams, CaptureParams or ReleaseParams.
type BatchRequest any

// RunBatch sends requests as one batch on account through t, as the
// coalescer does, and returns each one's result or error, in order.
func RunBatch(ctx context.Context, l *Ledger, t *tenancy.Tenant, account AccountID, requests ...BatchRequest) ([]any, error) {
	ops := batchOperations(requests)
	outs, err := l.runBatch(ctx, t, account.UUID(), ops)
	if err != nil {
		return nil, err
	}
	return batchResults(requests, outs), nil
}

// RunBatches sends requests on several accounts (spends and holds, whose
// account they name) as one batch through t, grouped by account in lock
// order, as the coalescer does, and returns each one's
// result or error, in the order given (one account sends the
// single-account statement, as the coalescer does).
func RunBatches(ctx context.Context, l *Ledger, t *tenancy.Tenant, requests ...BatchRequest) ([]any, error) {
	ops := batchOperations(requests)
	sorted, outs, err := l.runInLockOrder(ctx, t, ops)
	if err != nil {
		return nil, err
	}
	at := make(map[*operation]int, len(ops))
	for i, op := range ops {
		at[op] = i
	}
	inOrder := make([]outcome, len(outs))
	for i, op := range sorted {
		inOrder[at[op]] = outs[i]
	}
	return batchResults(requests, inOrder), nil
}

func batchOperations(requests []BatchRequest) []*operation {
	ops := make([]*operation, len(requests))
	for i, r := range requests {
		switch p := r.(type) {
		case SpendParams:
			ops[i] = p.operation(p.hash())
		case HoldParams:
			ops[i] = p.operation(p.hash())
		case CaptureParams:
			ops[i] = p.operation(p.hash())
		case ReleaseParams:
			ops[i] = p.operation(p.hash())
		default:
			panic(fmt.Sprintf("RunBatch: %T", r))
		}
	}
	return ops
}

func batchResults(requests []BatchRequest, outs []outcome) []any {
	res := make([]any, len(outs))
	for i, o := range outs {
		var v any
		var err error
		switch p := requests[i].(type) {
		case SpendParams:
			v, err = o.spend(p.Account)
		case HoldParams:
			var r HoldResult
			err, v = o.decode("hold", &r), r
		case CaptureParams:
			var r CaptureResult
			err, v = o.decode("capture", &r), r
		case ReleaseParams:
			var r ReleaseResult
			err, v = o.decode("release", &r), r
		}
		if err != nil {
			v = err
		}
		res[i] = v
	}
	return res
}

// SetBeforeSend makes f run whenever l is about to send a batch (its
// requests counted as sent).
func SetBeforeSend(l *Ledger, f func()) { l.co.beforeSend = f }

// Pending returns how many requests wait in l's queues.
func Pending(l *Ledger) int {
	l.co.mu.Lock()
	defer l.co.mu.Unlock()
	n := 0
	for _, q := range l.co.queues {
		n += len(q.pending)
	}
	return n
}
