package tenancy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	sq "github.com/Masterminds/squirrel"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/meterbase/meterbase/internal/pg"
)

// OperatorMarker opens every statement an Operator sends, so that
// cross-tenant reads stand out in code review, in the server's logs and in
// pg_stat_statements.
const OperatorMarker = "/* meterbase:operator */ "

// Operator reads across tenants, for admin and support interfaces. It only
// reads. Every use names its reason, which is set for row-level security
// (whose operator policies allow reads while it is set) and is meant to be
// grepped for: NewOperator is the one door to other tenants' rows.
type Operator struct {
	db     DBTX
	reason string
}

// NewOperator returns a cross-tenant reader. reason says why, for the people
// who review and audit its uses; it must not be empty.
func NewOperator(db DBTX, reason string) (*Operator, error) {
	if db == nil {
		return nil, &InvalidInputError{Field: "db", Reason: "is nil"}
	}
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return nil, &InvalidInputError{Field: "operator reason", Reason: "is empty; say why this code reads across tenants"}
	}
	return &Operator{db: db, reason: reason}, nil
}

// Reason returns the reason the operator was made with.
func (o *Operator) Reason() string { return o.reason }

// read runs fn in a transaction (a savepoint of the host's) whose row-level
// security context is the operator's. The operator policies allow SELECT
// only, so nothing it could send would write.
func (o *Operator) read(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pg.InTx(ctx, o.db, func(tx pgx.Tx) error {
		// In the host's transaction the operator's reach would outlast the
		// call: put back what was set before, once it is done.
		restore := inHostTx(o.db)
		var before savedContext
		if restore {
			var err error
			if before, err = readContext(ctx, tx, OperatorMarker); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, OperatorMarker+`SELECT set_config('`+settingOperator+`', $1, true), set_config('`+settingWorkspace+`', '', true), set_config('`+settingUser+`', '', true)`, o.reason); err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			return err
		}
		if restore {
			return before.restore(ctx, tx, OperatorMarker)
		}
		return nil
	})
}

// WorkspaceList is a page of workspaces and the cursor of the next page.
type WorkspaceList struct {
	Workspaces []Workspace
	Next       string
}

// ListWorkspaces lists every tenant's workspace, oldest first, a page at a
// time.
func (o *Operator) ListWorkspaces(ctx context.Context, page Page) (WorkspaceList, error) {
	limit, after, err := page.bounds()
	if err != nil {
		return WorkspaceList{}, err
	}
	q := pg.SQ.Select(workspaceColumns).From(workspacesTable.name).
		Prefix(strings.TrimSpace(OperatorMarker)).OrderBy("workspace_id").Limit(uint64(limit) + 1)
	if after != uuid.Nil {
		q = q.Where(sq.Gt{"workspace_id": WorkspaceIDFromUUID(after)})
	}
	sql, args, err := q.ToSql()
	if err != nil {
		return WorkspaceList{}, err
	}
	var list WorkspaceList
	err = o.read(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		list.Workspaces, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Workspace, error) { return scanWorkspace(r) })
		return err
	})
	if err != nil {
		return WorkspaceList{}, fmt.Errorf("tenancy: operator list workspaces: %w", mapError(err))
	}
	list.Workspaces, list.Next = trimPage(list.Workspaces, limit, func(w Workspace) uuid.UUID { return w.ID.UUID() })
	return list, nil
}

// WorkspaceOf returns any tenant's workspace by id, or ErrNotFound.
func (o *Operator) WorkspaceOf(ctx context.Context, id WorkspaceID) (Workspace, error) {
	if err := id.valid(); err != nil {
		return Workspace{}, err
	}
	sql, args, err := pg.SQ.Select(workspaceColumns).From(workspacesTable.name).
		Prefix(strings.TrimSpace(OperatorMarker)).Where(sq.Eq{"workspace_id": id}).ToSql()
	if err != nil {
		return Workspace{}, err
	}
	var ws Workspace
	err = o.read(ctx, func(tx pgx.Tx) error {
		ws, err = scanWorkspace(tx.QueryRow(ctx, sql, args...))
		return err
	})
	if err = mapError(err); errors.Is(err, ErrNotFound) {
		return Workspace{}, ErrNotFound
	}
	if err != nil {
		return Workspace{}, fmt.Errorf("tenancy: operator get workspace: %w", err)
	}
	return ws, nil
}
