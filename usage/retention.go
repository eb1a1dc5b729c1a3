package usage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meterbase/meterbase/tenancy"
)

// DeleteBeforeParams say which events retention deletes: those that
// happened before Before.
type DeleteBeforeParams struct {
	Before time.Time // required, and not after now
	// BatchSize bounds the events one statement deletes (and so the locks
	// one transaction holds). Default 5000, at most 50000.
	BatchSize int
}

// DeleteResult says what retention deleted.
type DeleteResult struct {
	Deleted int64     `json:"deleted"`
	Batches int       `json:"batches"`
	Horizon time.Time `json:"horizon"` // the workspace's retention horizon now
}

// Default and bound of DeleteBeforeParams.BatchSize.
const (
	DefaultDeleteBatch = 5000
	MaxDeleteBatch     = 50000
)

// DeleteBefore deletes the workspace's events that happened before
// p.Before, oldest first, in batches of p.BatchSize, each its own statement
// (and, on a pool, its own short transaction): safe while events are being
// recorded, which it neither blocks nor is blocked by (rows another
// transaction holds wait for a later run). Summaries are unchanged: the
// rollups keep counting what is deleted.
//
// It first moves the workspace's retention horizon to p.Before (never
// back): events dated before the horizon are refused from then on
// (ErrRetained), because their idempotency keys may be gone and a retry
// would be counted twice. Give it a pool: in a host's transaction every
// batch would hold its locks until the host commits.
//
// When ctx ends between batches, it returns what was deleted so far with
// ctx's error; run it again to go on.
func (s *Service) DeleteBefore(ctx context.Context, t *tenancy.Tenant, p DeleteBeforeParams) (DeleteResult, error) {
	if err := usable(t); err != nil {
		return DeleteResult{}, err
	}
	if p.Before.IsZero() {
		return DeleteResult{}, invalid("retention cut-off", "is zero")
	}
	before := p.Before.UTC().Truncate(time.Microsecond)
	now := s.cfg.now()
	if now != nil && before.After(*now) {
		return DeleteResult{}, invalid("retention cut-off", fmt.Sprintf("%s is in the future", before.Format(time.RFC3339)))
	}
	batch := p.BatchSize
	switch {
	case batch == 0:
		batch = DefaultDeleteBatch
	case batch < 0 || batch > MaxDeleteBatch:
		return DeleteResult{}, invalid("retention batch size", fmt.Sprintf("%d is not between 1 and %d", batch, MaxDeleteBatch))
	}
	var res DeleteResult
	err := queryRow(ctx, t, stmtRetentionSet, tenancy.Args{"before": before, "now": now}).Scan(&res.Horizon)
	if errors.Is(err, tenancy.ErrNotFound) {
		return DeleteResult{}, invalid("retention cut-off", fmt.Sprintf("%s is in the future", before.Format(time.RFC3339)))
	}
	if err != nil {
		return DeleteResult{}, fmt.Errorf("usage: set the retention horizon: %w", err)
	}
	res.Horizon = res.Horizon.UTC()
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		tag, err := exec(ctx, t, stmtRetentionDelete, tenancy.Args{"before": before, "batch": int32(batch)})
		if err != nil {
			return res, fmt.Errorf("usage: delete events: %w", err)
		}
		res.Batches++
		res.Deleted += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return res, nil
		}
	}
}
