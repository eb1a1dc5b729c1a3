package tenancy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	sq "github.com/Masterminds/squirrel"
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
	if pg.IsNil(db) {
		return nil, &InvalidInputError{Field: "db", Reason: "is nil"}
	}
	if err := checkTextField("operator reason", reason); err != nil {
		return nil, err
	}
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return nil, &InvalidInputError{Field: "operator reason", Reason: "is empty; say why this code reads across tenants"}
	}
	return &Operator{db: db, reason: reason}, nil
}

// Reason returns the reason the operator was made with.
func (o *Operator) Reason() string {
	if o == nil {
		return ""
	}
	return o.reason
}

// usable refuses a nil or zero Operator (one not made by NewOperator).
func (o *Operator) usable() error {
	if o == nil || o.db == nil || o.reason == "" {
		return &InvalidInputError{Field: "operator", Reason: "is nil or zero; make it with NewOperator"}
	}
	return nil
}

// operatorContextSQL gives the transaction the operator's reach ($1, the
// reason) and no tenant's or directory's.
var operatorContextSQL = contextSQL(func(i int, name string) string {
	if name == settingOperator {
		return setTo(name, "$1")
	}
	return setTo(name, "''")
})

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
		if _, err := tx.Exec(ctx, OperatorMarker+operatorContextSQL, o.reason); err != nil {
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

// operatorWorkspacesList names the operator's workspace list in its
// cursors, which are bound to no workspace.
const operatorWorkspacesList = "tenancy.operator.workspaces"

// ListWorkspaces lists every tenant's workspace in a stable order (by id,
// so oldest first), a page at a time.
func (o *Operator) ListWorkspaces(ctx context.Context, page Page) (List[Workspace], error) {
	if err := o.usable(); err != nil {
		return List[Workspace]{}, err
	}
	pq, err := page.query(WorkspaceID{}, operatorWorkspacesList)
	if err != nil {
		return List[Workspace]{}, err
	}
	q := pg.SQ.Select(workspaceColumns).From(workspacesTable.name).
		Prefix(strings.TrimSpace(OperatorMarker)).OrderBy("workspace_id").Limit(uint64(pq.Limit) + 1)
	if pq.After != nil {
		q = q.Where(sq.Gt{"workspace_id": WorkspaceIDFromUUID(pq.After.ID)})
	}
	if pq.Offset > 0 {
		q = q.Offset(uint64(pq.Offset))
	}
	sql, args, err := q.ToSql()
	if err != nil {
		return List[Workspace]{}, err
	}
	var items []Workspace
	var total int64
	err = o.read(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		if items, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Workspace, error) { return scanWorkspace(r) }); err != nil {
			return err
		}
		if pq.WithTotal {
			return tx.QueryRow(ctx, OperatorMarker+`SELECT count(*) FROM `+workspacesTable.name).Scan(&total)
		}
		return nil
	})
	if err != nil {
		return List[Workspace]{}, fmt.Errorf("tenancy: operator list workspaces: %w", mapError(err))
	}
	list := paginate(WorkspaceID{}, operatorWorkspacesList, pq, items, func(w Workspace) Keyset { return Keyset{ID: w.ID.UUID()} })
	if pq.WithTotal {
		list.Total = &total
	}
	return list, nil
}

// WorkspaceOf returns any tenant's workspace by id, or ErrNotFound.
func (o *Operator) WorkspaceOf(ctx context.Context, id WorkspaceID) (Workspace, error) {
	if err := o.usable(); err != nil {
		return Workspace{}, err
	}
	if err := id.Valid(); err != nil {
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
