package usage

import (
	"context"

	"github.com/meterbase/meterbase/tenancy"
)

// Statements are the package's prepared statements, by name.
func Statements() tenancy.Statements { return statements }

// OnStatement makes f hear the name of every prepared statement run, and
// its call's context, until the returned function is called.
func OnStatement(f func(ctx context.Context, name string)) (stop func()) {
	statementRan.Store(&f)
	return func() { statementRan.Store(nil) }
}

// BatchArgs are the arguments RecordBatch sends for valid events, in order.
func BatchArgs(s *Service, events []RecordParams) tenancy.Args {
	batch := make([]indexed, len(events))
	for i, p := range events {
		e, err := s.cfg.prepare(p, nil)
		if err != nil {
			panic(err)
		}
		batch[i] = indexed{i, e}
	}
	return s.batchArgs(batch, nil)
}

// ViaUnnest makes s record batches with one statement of arrays instead
// of a stage.
func ViaUnnest(s *Service) { s.viaUnnest = true }

// EventsStage is RecordBatch's stage.
func EventsStage() tenancy.Stage { return eventsStage }

// RecorderID is the label of r's goroutine in goroutine profiles.
func RecorderID(r *Recorder) string { return r.id }

// CursorAfter is the cursor of the list p whose next page starts after e,
// as List would hand it out with e last on a page.
func CursorAfter(t *tenancy.Tenant, p ListParams, e Event) (string, error) {
	_, list, err := p.filters()
	if err != nil {
		return "", err
	}
	q, err := tenancy.Page{Limit: 1}.Query(t, list)
	if err != nil {
		return "", err
	}
	return tenancy.Paginate(t, list, q, []Event{e, e}, func(e Event) tenancy.Keyset {
		return tenancy.Keyset{Time: e.OccurredAt, ID: e.ID.UUID()}
	}).Next, nil
}

// Check runs the written-out check of a name of the given kind.
func Check(kind, s string) bool {
	switch kind {
	case "operation type":
		return isOperationType(s)
	case "unit":
		return isUnit(s)
	case "feature key":
		return isFeatureKey(s)
	}
	panic(kind)
}
