package tenancy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/meterbase/meterbase/internal/pg"
)

// Workspace is a tenant: the unit that owns members, credits and usage.
type Workspace struct {
	ID        WorkspaceID
	Name      string
	CreatedAt time.Time
	UpdatedAt time.Time
}

const workspaceColumns = "workspace_id, name, created_at, updated_at"

func scanWorkspace(row pgx.Row) (Workspace, error) {
	var w Workspace
	err := row.Scan(&w.ID, &w.Name, &w.CreatedAt, &w.UpdatedAt)
	return w, err
}

func workspaceName(name string) (string, error) {
	n := strings.TrimSpace(name)
	if n == "" {
		return "", &InvalidInputError{Field: "workspace name", Reason: "is empty"}
	}
	if utf8.RuneCountInString(n) > 200 {
		return "", &InvalidInputError{Field: "workspace name", Reason: "is longer than 200 characters"}
	}
	return n, nil
}

// CreateWorkspace creates a workspace with owner as its first owner, in one
// transaction (a savepoint of db's when db is a transaction). ErrNotFound
// if the owner is not a user.
func CreateWorkspace(ctx context.Context, db DBTX, name string, owner UserID) (Workspace, error) {
	n, err := workspaceName(name)
	if err != nil {
		return Workspace{}, err
	}
	if err := owner.valid(); err != nil {
		return Workspace{}, err
	}
	scope, _ := NewScope(NewWorkspaceID())
	t, err := NewTenant(db, scope)
	if err != nil {
		return Workspace{}, err
	}
	var ws Workspace
	err = t.InTx(ctx, func(tx *Tenant) error {
		ws, err = scanWorkspace(tx.Insert(workspacesTable).Columns("name").Values(n).Returning(workspaceColumns).QueryRow(ctx))
		if err != nil {
			return err
		}
		_, err = tx.Insert(membershipsTable).Columns("user_id", "role").Values(owner, RoleOwner).Exec(ctx)
		return err
	})
	if err != nil {
		return Workspace{}, mapMembershipError(err, "create workspace")
	}
	return ws, nil
}

// Workspace returns the tenant's workspace, or ErrNotFound once deleted.
func (t *Tenant) Workspace(ctx context.Context) (Workspace, error) {
	ws, err := scanWorkspace(t.Select(workspacesTable, workspaceColumns).QueryRow(ctx))
	if errors.Is(err, ErrNotFound) {
		return Workspace{}, ErrNotFound
	}
	if err != nil {
		return Workspace{}, fmt.Errorf("tenancy: get workspace: %w", err)
	}
	return ws, nil
}

// RenameWorkspace changes the workspace's name.
func (t *Tenant) RenameWorkspace(ctx context.Context, name string) (Workspace, error) {
	n, err := workspaceName(name)
	if err != nil {
		return Workspace{}, err
	}
	ws, err := scanWorkspace(t.Update(workspacesTable).
		Set("name", n).Set("updated_at", pg.Now).All().
		Returning(workspaceColumns).QueryRow(ctx))
	if errors.Is(err, ErrNotFound) {
		return Workspace{}, ErrNotFound
	}
	if err != nil {
		return Workspace{}, fmt.Errorf("tenancy: rename workspace: %w", err)
	}
	return ws, nil
}

// DeleteWorkspace deletes the workspace and, by cascade, everything it owns:
// memberships, credits, usage history.
func (t *Tenant) DeleteWorkspace(ctx context.Context) error {
	tag, err := t.Delete(workspacesTable).All().Exec(ctx)
	if err != nil {
		return fmt.Errorf("tenancy: delete workspace: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
