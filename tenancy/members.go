package tenancy

import (
	"context"
	"errors"
	"fmt"
	"time"

	sq "github.com/Masterminds/squirrel"
	"github.com/jackc/pgx/v5"

	"github.com/meterbase/meterbase/internal/pg"
)

// Role is a member's standing in a workspace: owner > admin > member.
type Role string

const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

func (r Role) rank() int {
	switch r {
	case RoleOwner:
		return 3
	case RoleAdmin:
		return 2
	case RoleMember:
		return 1
	}
	return 0
}

// Valid returns a typed error for anything but owner, admin or member.
func (r Role) Valid() error {
	if r.rank() == 0 {
		return &InvalidInputError{Field: "role", Reason: fmt.Sprintf("%q is not owner, admin or member", string(r))}
	}
	return nil
}

// AtLeast reports whether r ranks at or above min.
func (r Role) AtLeast(min Role) bool { return r.rank() >= min.rank() && min.rank() > 0 }

// Membership is a user's place in a workspace.
type Membership struct {
	WorkspaceID WorkspaceID `json:"workspaceId"`
	UserID      UserID      `json:"userId"`
	Role        Role        `json:"role"`
	CreatedAt   time.Time   `json:"createdAt"`
	UpdatedAt   time.Time   `json:"updatedAt"`
}

// Member is a membership with the user's name, as listed.
type Member struct {
	Membership
	Email       string `json:"email"`
	DisplayName string `json:"displayName"`
}

const membershipColumns = "workspace_id, user_id, role, created_at, updated_at"

func scanMembership(row pgx.Row) (Membership, error) {
	var m Membership
	err := row.Scan(&m.WorkspaceID, &m.UserID, &m.Role, &m.CreatedAt, &m.UpdatedAt)
	return m, err
}

// mapMembershipError translates the constraints of memberships.
func mapMembershipError(err error, op string) error {
	var ce *pg.ConstraintError
	if errors.As(pg.MapError(err), &ce) {
		switch ce.Constraint {
		case "memberships_keep_an_owner":
			return ErrLastOwner
		case "memberships_pkey":
			return ErrAlreadyMember
		case "memberships_user_fkey":
			return fmt.Errorf("%w: no such user", ErrNotFound)
		case "memberships_workspace_fkey":
			return fmt.Errorf("%w: no such workspace", ErrNotFound)
		}
	}
	return fmt.Errorf("tenancy: %s: %w", op, err)
}

// Members is the repository of a workspace's memberships. Make it once
// with NewMembers and share it; every method takes the tenant it acts for.
type Members struct{ cfg *Config }

// NewMembers returns the memberships repository. A nil cfg means the
// defaults.
func NewMembers(cfg *Config) *Members { return &Members{cfg: cfg} }

// AddMemberParams says whom to add, with which role.
type AddMemberParams struct {
	User UserID
	Role Role
}

// Add adds a user to the tenant's workspace. ErrAlreadyMember if the user
// belongs already; ErrNotFound if the user or workspace does not exist.
func (r *Members) Add(ctx context.Context, t *Tenant, p AddMemberParams) (Membership, error) {
	if err := t.usable(); err != nil {
		return Membership{}, err
	}
	if err := p.User.Valid(); err != nil {
		return Membership{}, err
	}
	if err := p.Role.Valid(); err != nil {
		return Membership{}, err
	}
	m, err := scanMembership(t.Insert(membershipsTable).Columns("user_id", "role").Values(p.User, p.Role).
		Returning(membershipColumns).QueryRow(ctx))
	if err != nil {
		return Membership{}, mapMembershipError(err, "add member")
	}
	return m, nil
}

// SetRoleParams says whose role changes, to what.
type SetRoleParams struct {
	User UserID
	Role Role
}

// SetRole changes a member's role. ErrNotMember if the user is not a
// member; ErrLastOwner if it would demote the workspace's last owner.
func (r *Members) SetRole(ctx context.Context, t *Tenant, p SetRoleParams) (Membership, error) {
	if err := t.usable(); err != nil {
		return Membership{}, err
	}
	if err := p.User.Valid(); err != nil {
		return Membership{}, err
	}
	if err := p.Role.Valid(); err != nil {
		return Membership{}, err
	}
	m, err := scanMembership(t.Update(membershipsTable).Set("role", p.Role).Set("updated_at", pg.Now).
		Where(sq.Eq{"user_id": p.User}).Returning(membershipColumns).QueryRow(ctx))
	if errors.Is(err, ErrNotFound) {
		return Membership{}, ErrNotMember
	}
	if err != nil {
		return Membership{}, mapMembershipError(err, "set member role")
	}
	return m, nil
}

// Remove removes a user from the tenant's workspace. ErrNotMember if the
// user is not a member; ErrLastOwner if they are its last owner.
func (r *Members) Remove(ctx context.Context, t *Tenant, user UserID) error {
	if err := t.usable(); err != nil {
		return err
	}
	if err := user.Valid(); err != nil {
		return err
	}
	tag, err := t.Delete(membershipsTable).Where(sq.Eq{"user_id": user}).Exec(ctx)
	if err != nil {
		return mapMembershipError(err, "remove member")
	}
	if tag.RowsAffected() == 0 {
		return ErrNotMember
	}
	return nil
}

func membersQuery(t *Tenant) SelectBuilder {
	return t.Select(membershipsTable,
		"memberships.workspace_id", "memberships.user_id", "memberships.role", "memberships.created_at", "memberships.updated_at",
		"users.email", "users.display_name").
		Join(usersTable, "users.user_id = memberships.user_id")
}

func scanMember(row pgx.Row) (Member, error) {
	var m Member
	err := row.Scan(&m.WorkspaceID, &m.UserID, &m.Role, &m.CreatedAt, &m.UpdatedAt, &m.Email, &m.DisplayName)
	return m, err
}

// Get returns one member, or ErrNotMember.
func (r *Members) Get(ctx context.Context, t *Tenant, user UserID) (Member, error) {
	if err := t.usable(); err != nil {
		return Member{}, err
	}
	if err := user.Valid(); err != nil {
		return Member{}, err
	}
	m, err := scanMember(membersQuery(t).Where(sq.Eq{"memberships.user_id": user}).QueryRow(ctx))
	if errors.Is(err, ErrNotFound) {
		return Member{}, ErrNotMember
	}
	if err != nil {
		return Member{}, fmt.Errorf("tenancy: get member: %w", err)
	}
	return m, nil
}

// ListMembersParams asks for a page of members.
type ListMembersParams struct {
	Page Page
}

// membersList names the members list in its cursors.
const membersList = "tenancy.members"

// List lists the workspace's members in a stable order (by user id), one
// page at a time.
func (r *Members) List(ctx context.Context, t *Tenant, p ListMembersParams) (List[Member], error) {
	q, err := p.Page.Query(t, membersList)
	if err != nil {
		return List[Member]{}, err
	}
	sel := membersQuery(t).OrderBy("memberships.user_id").Limit(uint64(q.Limit) + 1)
	if q.After != nil {
		sel = sel.Where(sq.Gt{"memberships.user_id": IDFromUUID[userKind](q.After.ID)})
	}
	if q.Offset > 0 {
		sel = sel.Offset(uint64(q.Offset))
	}
	rows, err := sel.Query(ctx)
	if err != nil {
		return List[Member]{}, fmt.Errorf("tenancy: list members: %w", err)
	}
	members, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Member, error) { return scanMember(row) })
	if err != nil {
		return List[Member]{}, fmt.Errorf("tenancy: list members: %w", err)
	}
	list := Paginate(t, membersList, q, members, func(m Member) Keyset { return Keyset{ID: m.UserID.UUID()} })
	if q.WithTotal {
		var total int64
		if err := t.Select(membershipsTable, "count(*)").QueryRow(ctx).Scan(&total); err != nil {
			return List[Member]{}, fmt.Errorf("tenancy: count members: %w", err)
		}
		list.Total = &total
	}
	return list, nil
}

// AuthorizeParams says who acts, and the least role the action needs.
type AuthorizeParams struct {
	User    UserID
	MinRole Role
}

// Authorize checks that a user is a member of the tenant's workspace with
// at least p.MinRole, and returns the membership. ErrNotMember if not a
// member; a *ForbiddenError (errors.Is ErrForbidden) if the role is too
// low.
func (r *Members) Authorize(ctx context.Context, t *Tenant, p AuthorizeParams) (Membership, error) {
	if err := t.usable(); err != nil {
		return Membership{}, err
	}
	if err := p.User.Valid(); err != nil {
		return Membership{}, err
	}
	if err := p.MinRole.Valid(); err != nil {
		return Membership{}, err
	}
	m, err := scanMembership(t.Select(membershipsTable, membershipColumns).Where(sq.Eq{"user_id": p.User}).QueryRow(ctx))
	if errors.Is(err, ErrNotFound) {
		return Membership{}, ErrNotMember
	}
	if err != nil {
		return Membership{}, fmt.Errorf("tenancy: authorize: %w", err)
	}
	if !m.Role.AtLeast(p.MinRole) {
		return m, &ForbiddenError{User: p.User, Have: m.Role, Need: p.MinRole}
	}
	return m, nil
}
