package tenancy

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	sq "github.com/Masterminds/squirrel"
	"github.com/google/uuid"
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
	WorkspaceID WorkspaceID
	UserID      UserID
	Role        Role
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Member is a membership with the user's name, as listed.
type Member struct {
	Membership
	Email       string
	DisplayName string
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

// AddMember adds user to the workspace with role. ErrAlreadyMember if the
// user belongs already; ErrNotFound if the user or workspace does not exist.
func (t *Tenant) AddMember(ctx context.Context, user UserID, role Role) (Membership, error) {
	if err := user.valid(); err != nil {
		return Membership{}, err
	}
	if err := role.Valid(); err != nil {
		return Membership{}, err
	}
	m, err := scanMembership(t.Insert(membershipsTable).Columns("user_id", "role").Values(user, role).
		Returning(membershipColumns).QueryRow(ctx))
	if err != nil {
		return Membership{}, mapMembershipError(err, "add member")
	}
	return m, nil
}

// SetMemberRole changes a member's role. ErrNotMember if the user is not a
// member; ErrLastOwner if it would demote the workspace's last owner.
func (t *Tenant) SetMemberRole(ctx context.Context, user UserID, role Role) (Membership, error) {
	if err := user.valid(); err != nil {
		return Membership{}, err
	}
	if err := role.Valid(); err != nil {
		return Membership{}, err
	}
	m, err := scanMembership(t.Update(membershipsTable).Set("role", role).Set("updated_at", pg.Now).
		Where(sq.Eq{"user_id": user}).Returning(membershipColumns).QueryRow(ctx))
	if errors.Is(err, ErrNotFound) {
		return Membership{}, ErrNotMember
	}
	if err != nil {
		return Membership{}, mapMembershipError(err, "set member role")
	}
	return m, nil
}

// RemoveMember removes user from the workspace. ErrNotMember if the user is
// not a member; ErrLastOwner if they are its last owner.
func (t *Tenant) RemoveMember(ctx context.Context, user UserID) error {
	if err := user.valid(); err != nil {
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

func (t *Tenant) membersQuery() SelectBuilder {
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

// Member returns one member, or ErrNotMember.
func (t *Tenant) Member(ctx context.Context, user UserID) (Member, error) {
	if err := user.valid(); err != nil {
		return Member{}, err
	}
	m, err := scanMember(t.membersQuery().Where(sq.Eq{"memberships.user_id": user}).QueryRow(ctx))
	if errors.Is(err, ErrNotFound) {
		return Member{}, ErrNotMember
	}
	if err != nil {
		return Member{}, fmt.Errorf("tenancy: get member: %w", err)
	}
	return m, nil
}

// Page asks for one page of a list: at most Limit items (default 50, at most
// 1000) after the Cursor a previous page returned ("" for the first page).
type Page struct {
	Limit  int
	Cursor string
}

// DefaultPageLimit and MaxPageLimit bound Page.Limit.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 1000
)

func (p Page) limit() (int, error) {
	switch {
	case p.Limit == 0:
		return DefaultPageLimit, nil
	case p.Limit < 0 || p.Limit > MaxPageLimit:
		return 0, &InvalidInputError{Field: "page limit", Reason: fmt.Sprintf("%d is not between 1 and %d", p.Limit, MaxPageLimit)}
	}
	return p.Limit, nil
}

// bounds validates the page: its limit, and the id its cursor says the
// previous page ended at (uuid.Nil for the first page).
func (p Page) bounds() (limit int, after uuid.UUID, err error) {
	if limit, err = p.limit(); err != nil {
		return 0, uuid.Nil, err
	}
	if p.Cursor != "" {
		after, err = decodeCursor(p.Cursor)
	}
	return limit, after, err
}

// trimPage cuts items, fetched with one more than limit, to the page and
// returns the cursor of the next one ("" when there is none).
func trimPage[T any](items []T, limit int, id func(T) uuid.UUID) ([]T, string) {
	if len(items) <= limit {
		return items, ""
	}
	return items[:limit], encodeCursor(id(items[limit-1]))
}

// MemberList is a page of members and the cursor of the next page, "" after
// the last.
type MemberList struct {
	Members []Member
	Next    string
}

// ListMembers lists the workspace's members in a stable order (by user id),
// one page at a time. Pages stay consistent while members come and go: a
// cursor is the last user id seen, not an offset.
func (t *Tenant) ListMembers(ctx context.Context, page Page) (MemberList, error) {
	limit, after, err := page.bounds()
	if err != nil {
		return MemberList{}, err
	}
	q := t.membersQuery().OrderBy("memberships.user_id").Limit(uint64(limit) + 1)
	if after != uuid.Nil {
		q = q.Where(sq.Gt{"memberships.user_id": UserIDFromUUID(after)})
	}
	rows, err := q.Query(ctx)
	if err != nil {
		return MemberList{}, fmt.Errorf("tenancy: list members: %w", err)
	}
	members, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Member, error) { return scanMember(row) })
	if err != nil {
		return MemberList{}, fmt.Errorf("tenancy: list members: %w", err)
	}
	var list MemberList
	list.Members, list.Next = trimPage(members, limit, func(m Member) uuid.UUID { return m.UserID.UUID() })
	return list, nil
}

// A cursor is the last id of a page, opaque to callers.
func encodeCursor(last uuid.UUID) string {
	return base64.RawURLEncoding.EncodeToString(last[:])
}

func decodeCursor(cursor string) (uuid.UUID, error) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(b) != 16 {
		return uuid.Nil, &InvalidInputError{Field: "cursor", Reason: "was not returned by a previous page"}
	}
	return uuid.UUID(b), nil
}

// Authorize checks that user is a member of the workspace with at least the
// min role, and returns the membership. ErrNotMember if not a member; a
// *ForbiddenError (errors.Is ErrForbidden) if the role is too low.
func (t *Tenant) Authorize(ctx context.Context, user UserID, min Role) (Membership, error) {
	if err := user.valid(); err != nil {
		return Membership{}, err
	}
	if err := min.Valid(); err != nil {
		return Membership{}, err
	}
	m, err := scanMembership(t.Select(membershipsTable, membershipColumns).Where(sq.Eq{"user_id": user}).QueryRow(ctx))
	if errors.Is(err, ErrNotFound) {
		return Membership{}, ErrNotMember
	}
	if err != nil {
		return Membership{}, fmt.Errorf("tenancy: authorize: %w", err)
	}
	if !m.Role.AtLeast(min) {
		return m, &ForbiddenError{User: user, Have: m.Role, Need: min}
	}
	return m, nil
}
