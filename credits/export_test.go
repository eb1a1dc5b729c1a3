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
	outs, err := l.runBatch(ctx, t, account.UUID(), ops)
	if err != nil {
		return nil, err
	}
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
	return res, nil
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
