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
	ID        WorkspaceID `json:"id"`
	Name      string      `json:"name"`
	CreatedAt time.Time   `json:"createdAt"`
	UpdatedAt time.Time   `json:"updatedAt"`
}

const workspaceColumns = "workspace_id, name, created_at, updated_at"

func scanWorkspace(row pgx.Row) (Workspace, error) {
	var w Workspace
	err := row.Scan(&w.ID, &w.Name, &w.CreatedAt, &w.UpdatedAt)
	return w, err
}

func workspaceName(name string) (string, error) {
	if err := checkTextField("workspace name", name); err != nil {
		return "", err
	}
	n := strings.TrimSpace(name)
	if n == "" {
		return "", &InvalidInputError{Field: "workspace name", Reason: "is empty"}
	}
	if utf8.RuneCountInString(n) > 200 {
		return "", &InvalidInputError{Field: "workspace name", Reason: "is longer than 200 characters"}
	}
	return n, nil
}

// Workspaces is the repository of workspaces. Make it once with
// NewWorkspaces and share it; every method but Create takes the tenant it
// acts for.
type Workspaces struct{ cfg *Config }

// NewWorkspaces returns the workspaces repository. A nil cfg means the
// defaults.
func NewWorkspaces(cfg *Config) *Workspaces { return &Workspaces{cfg: cfg} }

// CreateWorkspaceParams names a new workspace and its first owner.
type CreateWorkspaceParams struct {
	Name  string // 1 to 200 characters, trimmed
	Owner UserID
}

// createWorkspace inserts a workspace and its first owner in one
// statement: one round trip, and the owner check at commit (or at the end
// of the statement, under SET CONSTRAINTS ALL IMMEDIATE) finds the owner
// there.
var createWorkspace = MustPrepare("tenancy.create_workspace", `
	WITH w AS (
		INSERT INTO {workspaces} (name) VALUES (@name)
		RETURNING `+workspaceColumns+`
	), m AS (
		INSERT INTO {memberships} (user_id, role) VALUES (@owner, 'owner')
	)
	SELECT `+workspaceColumns+` FROM w`)

// Create creates a workspace with p.Owner as its first owner, in one
// statement (inside db's transaction when db is one). ErrNotFound if the
// owner is not a user. It takes the connection rather than a tenant: the
// tenant does not exist yet.
func (r *Workspaces) Create(ctx context.Context, db DBTX, p CreateWorkspaceParams) (Workspace, error) {
	n, err := workspaceName(p.Name)
	if err != nil {
		return Workspace{}, err
	}
	if err := p.Owner.Valid(); err != nil {
		return Workspace{}, err
	}
	scope, _ := NewScope(NewWorkspaceID())
	t, err := NewTenant(db, scope)
	if err != nil {
		return Workspace{}, err
	}
	ws, err := scanWorkspace(t.QueryRow(ctx, createWorkspace, Args{"name": n, "owner": p.Owner}))
	if err != nil {
		return Workspace{}, mapMembershipError(err, "create workspace")
	}
	return ws, nil
}

// Get returns the tenant's workspace, or ErrNotFound once deleted.
func (r *Workspaces) Get(ctx context.Context, t *Tenant) (Workspace, error) {
	ws, err := scanWorkspace(t.Select(workspacesTable, workspaceColumns).QueryRow(ctx))
	if errors.Is(err, ErrNotFound) {
		return Workspace{}, ErrNotFound
	}
	if err != nil {
		return Workspace{}, fmt.Errorf("tenancy: get workspace: %w", err)
	}
	return ws, nil
}

// RenameWorkspaceParams gives a workspace its new name.
type RenameWorkspaceParams struct {
	Name string // 1 to 200 characters, trimmed
}

// Rename changes the workspace's name.
func (r *Workspaces) Rename(ctx context.Context, t *Tenant, p RenameWorkspaceParams) (Workspace, error) {
	n, err := workspaceName(p.Name)
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

// Delete deletes the workspace and, by cascade, everything it owns:
// memberships, credits, usage history.
func (r *Workspaces) Delete(ctx context.Context, t *Tenant) error {
	tag, err := t.Delete(workspacesTable).All().Exec(ctx)
	if err != nil {
		return fmt.Errorf("tenancy: delete workspace: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
