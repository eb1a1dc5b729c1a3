package tenancy

import (
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// ID is a UUID that knows what it identifies, so that a user's id cannot be
// passed where a workspace's is expected. Its zero value is "no id" and is
// refused wherever an id is required.
//
// Any package declares ids of its own with a Kind:
//
//	type grantKind struct{}
//	func (grantKind) IDKind() string { return "grant" }
//	type GrantID = tenancy.ID[grantKind]
type ID[K Kind] struct{ u uuid.UUID }

// WorkspaceID identifies a workspace, the tenant.
type WorkspaceID = ID[workspaceKind]

// UserID identifies a user.
type UserID = ID[userKind]

// Kind names what an ID identifies, for error messages ("invalid grant
// id"). Implement it on an empty struct type of your own.
type Kind interface{ IDKind() string }

type workspaceKind struct{}

func (workspaceKind) IDKind() string { return "workspace" }

type userKind struct{}

func (userKind) IDKind() string { return "user" }

// NewWorkspaceID returns a new time-ordered (UUIDv7) workspace id.
func NewWorkspaceID() WorkspaceID { return NewID[workspaceKind]() }

// NewUserID returns a new time-ordered (UUIDv7) user id.
func NewUserID() UserID { return NewID[userKind]() }

// NewID returns a new time-ordered (UUIDv7) id of kind K: ids made later
// sort later, which keeps the primary key's index compact.
func NewID[K Kind]() ID[K] {
	// NewV7 fails only when the system's random source does.
	return ID[K]{uuid.Must(uuid.NewV7())}
}

// ParseWorkspaceID parses a workspace id in any of the usual UUID spellings.
func ParseWorkspaceID(s string) (WorkspaceID, error) { return ParseID[workspaceKind](s) }

// ParseUserID parses a user id in any of the usual UUID spellings.
func ParseUserID(s string) (UserID, error) { return ParseID[userKind](s) }

// ParseID parses an id of kind K in any of the usual UUID spellings,
// refusing the zero UUID.
func ParseID[K Kind](s string) (ID[K], error) {
	var k K
	u, err := uuid.Parse(s)
	if err != nil {
		return ID[K]{}, &InvalidIDError{Kind: k.IDKind(), Value: s, Reason: "not a UUID"}
	}
	if u == uuid.Nil {
		return ID[K]{}, &InvalidIDError{Kind: k.IDKind(), Value: s, Reason: "the zero UUID is not an id"}
	}
	return ID[K]{u}, nil
}

// IDFromUUID wraps an existing UUID as an id of kind K.
func IDFromUUID[K Kind](u uuid.UUID) ID[K] { return ID[K]{u} }

// WorkspaceIDFromUUID wraps an existing UUID, for hosts that have one.
func WorkspaceIDFromUUID(u uuid.UUID) WorkspaceID { return WorkspaceID{u} }

// UserIDFromUUID wraps an existing UUID, for hosts that have one.
func UserIDFromUUID(u uuid.UUID) UserID { return UserID{u} }

// IsZero reports whether the id is unset.
func (id ID[K]) IsZero() bool { return id.u == uuid.Nil }

// UUID returns the id as a uuid.UUID.
func (id ID[K]) UUID() uuid.UUID { return id.u }

func (id ID[K]) String() string { return id.u.String() }

// Valid returns a typed error (*InvalidIDError) for a zero id.
func (id ID[K]) Valid() error {
	if id.IsZero() {
		var k K
		return &InvalidIDError{Kind: k.IDKind(), Reason: "the id is zero"}
	}
	return nil
}

// MarshalText encodes the id as its UUID string, in JSON and elsewhere.
func (id ID[K]) MarshalText() ([]byte, error) { return id.u.MarshalText() }

// UnmarshalText parses a UUID string, refusing the zero UUID.
func (id *ID[K]) UnmarshalText(b []byte) error {
	parsed, err := ParseID[K](string(b))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}

// UUIDValue lets pgx send the id as a binary uuid.
func (id ID[K]) UUIDValue() (pgtype.UUID, error) {
	return pgtype.UUID{Bytes: id.u, Valid: !id.IsZero()}, nil
}

// ScanUUID lets pgx read a uuid column into the id.
func (id *ID[K]) ScanUUID(v pgtype.UUID) error {
	if !v.Valid {
		var k K
		return fmt.Errorf("tenancy: cannot scan NULL into a %s id", k.IDKind())
	}
	id.u = v.Bytes
	return nil
}

// Scope is the tenant a handle acts for: a workspace, and optionally the
// user acting in it (which user-scoped tables also filter on). A Scope can
// only be made valid; its zero value is refused by NewTenant.
type Scope struct {
	workspace WorkspaceID
	user      UserID
}

// NewScope returns the scope of a workspace.
func NewScope(workspace WorkspaceID) (Scope, error) {
	if err := workspace.Valid(); err != nil {
		return Scope{}, err
	}
	return Scope{workspace: workspace}, nil
}

// NewUserScope returns the scope of a user acting in a workspace.
func NewUserScope(workspace WorkspaceID, user UserID) (Scope, error) {
	if err := workspace.Valid(); err != nil {
		return Scope{}, err
	}
	if err := user.Valid(); err != nil {
		return Scope{}, err
	}
	return Scope{workspace: workspace, user: user}, nil
}

// Workspace returns the scope's workspace.
func (s Scope) Workspace() WorkspaceID { return s.workspace }

// User returns the scope's user, zero for a workspace-wide scope.
func (s Scope) User() UserID { return s.user }
