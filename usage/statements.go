package usage

import (
	"context"
	"embed"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meterbase/meterbase/tenancy"
)

// The package's tenant tables.
var (
	eventsTable      = tenancy.DefineTable("usage_events", tenancy.WorkspaceScoped)
	rollupsTable     = tenancy.DefineTable("usage_rollups", tenancy.WorkspaceScoped)
	adjustmentsTable = tenancy.DefineTable("usage_adjustments", tenancy.WorkspaceScoped)
	retentionTable   = tenancy.DefineTable("usage_retention", tenancy.WorkspaceScoped)
)

//go:embed sql/*.sql
var sqlFiles embed.FS

// statements are the package's hand-written SQL, checked and rewritten
// once, when the package loads.
var statements = tenancy.MustPrepareFS(sqlFiles, "sql")

var (
	stmtRecord             = statements["record"]
	stmtEventByKey         = statements["event_by_key"]
	stmtRecordStaged       = statements["record_staged"]
	stmtRecordStagedNew    = statements["record_staged_new"]
	stmtRecordStagedReport = statements["record_staged_report"]
	stmtRecordUnnest       = statements["record_unnest"]
	stmtSummary            = statements["summary"]
	stmtSummaryPieces      = statements["summary_pieces"]
	stmtAdjust             = statements["adjust"]
	stmtAdjustmentByKey    = statements["adjustment_by_key"]
	stmtRetentionSet       = statements["retention_set"]
	stmtRetentionDelete    = statements["retention_delete"]
)

// statementRan, when set (by tests), is told the name of every prepared
// statement the package runs, with the call's context, so that a test can
// prove each one is covered by the isolation suite.
var statementRan atomic.Pointer[func(ctx context.Context, name string)]

func ran(ctx context.Context, s *tenancy.Statement) {
	if f := statementRan.Load(); f != nil {
		(*f)(ctx, s.Name())
	}
}

func queryRow(ctx context.Context, t *tenancy.Tenant, s *tenancy.Statement, args tenancy.Args) pgx.Row {
	ran(ctx, s)
	return t.QueryRow(ctx, s, args)
}

func query(ctx context.Context, t *tenancy.Tenant, s *tenancy.Statement, args tenancy.Args) (pgx.Rows, error) {
	ran(ctx, s)
	return t.Query(ctx, s, args)
}

func exec(ctx context.Context, t *tenancy.Tenant, s *tenancy.Statement, args tenancy.Args) (pgconn.CommandTag, error) {
	ran(ctx, s)
	return t.Exec(ctx, s, args)
}

// usable refuses a nil or zero Tenant before anything else.
func usable(t *tenancy.Tenant) error {
	if t.Scope().Workspace().IsZero() {
		return &tenancy.InvalidInputError{Field: "tenant", Reason: "is nil or zero; make it with tenancy.NewTenant"}
	}
	return nil
}
