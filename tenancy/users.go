package tenancy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meterbase/meterbase/internal/pg"
)

// User is a person who can belong to workspaces. Users are global: the same
// user may be a member of many workspaces.
type User struct {
	ID          UserID    `json:"id"`
	Email       string    `json:"email"` // trimmed and lower-cased
	DisplayName string    `json:"displayName"`
	CreatedAt   time.Time `json:"createdAt"`
}

// CreateUserParams is what Users.Create needs.
type CreateUserParams struct {
	Email       string
	DisplayName string // optional, at most 200 characters
}

// Users is the repository of users: the global directory that sign-up and
// sign-in need, outside any tenant. Make it once with NewUsers and share
// it; every method takes the connection it runs on (there is no tenant to
// take). Row-level security lets a tenant context read only its own
// members; this repository's statements are admitted by a setting of their
// own, meterbase.directory, which each of them sets transaction-locally in
// the same round trip (and, in a host's transaction, puts back after).
type Users struct{ cfg *Config }

// NewUsers returns the users repository. A nil cfg means the defaults.
func NewUsers(cfg *Config) *Users { return &Users{cfg: cfg} }

const userColumns = "user_id, email, display_name, created_at"

// directoryContextSQL admits a statement to users (the policy
// users_directory, migration 0005), with no tenant's or operator's
// context beside it.
var directoryContextSQL = contextSQL(func(_ int, name string) string {
	if name == settingDirectory {
		return setTo(name, "'on'")
	}
	return setTo(name, "''")
})

// queryRow runs a one-row statement in the directory.
func queryRowInDirectory(ctx context.Context, db DBTX, sql string, args []any) pgx.Row {
	br, err := sendInContext(ctx, db, directoryContextSQL, nil, sql, args)
	if err != nil {
		return errRow{err}
	}
	return &batchRow{br: br}
}

// execInDirectory runs a statement in the directory.
func execInDirectory(ctx context.Context, db DBTX, sql string, args []any) (pgconn.CommandTag, error) {
	br, err := sendInContext(ctx, db, directoryContextSQL, nil, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// checkDB refuses a nil or typed-nil connection.
func checkDB(db DBTX) error {
	if pg.IsNil(db) {
		return &InvalidInputError{Field: "db", Reason: "is nil"}
	}
	return nil
}

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.DisplayName, &u.CreatedAt)
	return u, err
}

// NormalizeEmail trims and lower-cases an email and checks its shape.
func NormalizeEmail(email string) (string, error) {
	if err := checkTextField("email", email); err != nil {
		return "", err
	}
	e := strings.ToLower(strings.TrimSpace(email))
	local, domain, ok := strings.Cut(e, "@")
	switch {
	case e == "":
		return "", &InvalidInputError{Field: "email", Reason: "is empty"}
	case len(e) > 320:
		return "", &InvalidInputError{Field: "email", Reason: "is longer than 320 bytes"}
	case !ok || local == "" || domain == "" || strings.Contains(domain, "@"):
		return "", &InvalidInputError{Field: "email", Reason: fmt.Sprintf("%q is not of the form name@domain", email)}
	case strings.ContainsFunc(e, unicode.IsSpace):
		return "", &InvalidInputError{Field: "email", Reason: fmt.Sprintf("%q contains white space", email)}
	}
	return e, nil
}

// Create adds a user. ErrEmailTaken if another user has the email.
func (r *Users) Create(ctx context.Context, db DBTX, p CreateUserParams) (User, error) {
	if err := checkDB(db); err != nil {
		return User{}, err
	}
	email, err := NormalizeEmail(p.Email)
	if err != nil {
		return User{}, err
	}
	if err := checkTextField("display name", p.DisplayName); err != nil {
		return User{}, err
	}
	name := strings.TrimSpace(p.DisplayName)
	if utf8.RuneCountInString(name) > 200 {
		return User{}, &InvalidInputError{Field: "display name", Reason: "is longer than 200 characters"}
	}
	u, err := scanUser(queryRowInDirectory(ctx, db,
		`INSERT INTO users (user_id, email, display_name) VALUES ($1, $2, $3) RETURNING `+userColumns,
		[]any{NewUserID(), email, name}))
	if err != nil {
		if err = mapError(err); errors.Is(err, ErrUniqueViolation) {
			return User{}, fmt.Errorf("%w: %s", ErrEmailTaken, email)
		}
		return User{}, fmt.Errorf("tenancy: create user: %w", err)
	}
	return u, nil
}

// Get returns a user, or ErrNotFound.
func (r *Users) Get(ctx context.Context, db DBTX, id UserID) (User, error) {
	if err := id.Valid(); err != nil {
		return User{}, err
	}
	return r.get(ctx, db, "user_id", id)
}

// GetByEmail returns the user with the email, matched case-insensitively,
// or ErrNotFound.
func (r *Users) GetByEmail(ctx context.Context, db DBTX, email string) (User, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	return r.get(ctx, db, "email", e)
}

func (r *Users) get(ctx context.Context, db DBTX, column string, value any) (User, error) {
	if err := checkDB(db); err != nil {
		return User{}, err
	}
	u, err := scanUser(queryRowInDirectory(ctx, db, `SELECT `+userColumns+` FROM users WHERE `+column+` = $1`, []any{value}))
	if err = mapError(err); errors.Is(err, ErrNotFound) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("tenancy: get user: %w", err)
	}
	return u, nil
}

// Delete removes a user and their memberships. The workspaces' own history
// (usage, ledger) keeps the user's id and stays. It fails with
// ErrLastOwner, changing nothing, while the user is the last owner of a
// workspace: transfer or delete that workspace first.
func (r *Users) Delete(ctx context.Context, db DBTX, id UserID) error {
	if err := checkDB(db); err != nil {
		return err
	}
	if err := id.Valid(); err != nil {
		return err
	}
	tag, err := execInDirectory(ctx, db, `DELETE FROM users WHERE user_id = $1`, []any{id})
	if err != nil {
		return mapMembershipError(err, "delete user")
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
