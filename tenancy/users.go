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
	ID          UserID
	Email       string // trimmed and lower-cased
	DisplayName string
	CreatedAt   time.Time
}

// NewUser is what Users.Create needs.
type NewUser struct {
	Email       string
	DisplayName string // optional, at most 200 characters
}

// Users is the repository of users: the global directory that sign-up and
// sign-in need, outside any tenant. Row-level security lets a tenant
// context read only its own members; this repository's statements are
// admitted by a setting of their own, meterbase.directory, which each of
// them sets transaction-locally in the same round trip.
type Users struct{ db DBTX }

// NewUsers returns the users repository over db.
func NewUsers(db DBTX) *Users { return &Users{db: db} }

// checkDB refuses a repository made without a connection.
func (r *Users) checkDB() error {
	if r == nil || r.db == nil {
		return &InvalidInputError{Field: "db", Reason: "is nil; make the repository with NewUsers(db)"}
	}
	return nil
}

const userColumns = "user_id, email, display_name, created_at"

// settingDirectory admits the directory's statements to users (the policy
// users_directory, migration 0005). Like the tenant's settings, it is
// transaction-local: in the implicit transaction of a batch it ends with
// the statement; in a host's transaction the batch puts back the value it
// found (in a slot of its own, so that it never meets the tenant handle's).
const settingDirectory = "meterbase.directory"

const (
	openDirectorySQL        = `SELECT set_config('` + settingDirectory + `', 'on', true)`
	saveAndOpenDirectorySQL = `SELECT set_config('meterbase.saved_directory', coalesce(current_setting('` + settingDirectory + `', true), ''), true), ` +
		`set_config('` + settingDirectory + `', 'on', true)`
	restoreDirectorySQL = `SELECT set_config('` + settingDirectory + `', current_setting('meterbase.saved_directory'), true)`
)

// send sends sql with the directory's setting around it, in one round trip,
// and returns the results from the statement's on.
func (r *Users) send(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	hostTx := inHostTx(r.db)
	if hostTx {
		b.Queue(saveAndOpenDirectorySQL)
	} else {
		b.Queue(openDirectorySQL)
	}
	b.Queue(sql, args...)
	if hostTx {
		b.Queue(restoreDirectorySQL)
	}
	br := r.db.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	return br, nil
}

// queryRow runs a one-row statement in the directory.
func (r *Users) queryRow(ctx context.Context, sql string, args []any) pgx.Row {
	br, err := r.send(ctx, sql, args)
	if err != nil {
		return errRow{err}
	}
	return &batchRow{br: br}
}

// exec runs a statement in the directory.
func (r *Users) exec(ctx context.Context, sql string, args []any) (pgconn.CommandTag, error) {
	br, err := r.send(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.DisplayName, &u.CreatedAt)
	return u, err
}

// NormalizeEmail trims and lower-cases an email and checks its shape.
func NormalizeEmail(email string) (string, error) {
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
func (r *Users) Create(ctx context.Context, in NewUser) (User, error) {
	if err := r.checkDB(); err != nil {
		return User{}, err
	}
	email, err := NormalizeEmail(in.Email)
	if err != nil {
		return User{}, err
	}
	name := strings.TrimSpace(in.DisplayName)
	if utf8.RuneCountInString(name) > 200 {
		return User{}, &InvalidInputError{Field: "display name", Reason: "is longer than 200 characters"}
	}
	sql, args, err := pg.SQ.Insert(usersTable.name).
		Columns("user_id", "email", "display_name").
		Values(NewUserID(), email, name).
		Suffix("RETURNING " + userColumns).ToSql()
	if err != nil {
		return User{}, err
	}
	u, err := scanUser(r.queryRow(ctx, sql, args))
	if err != nil {
		if err = mapError(err); errors.Is(err, ErrUniqueViolation) {
			return User{}, fmt.Errorf("%w: %s", ErrEmailTaken, email)
		}
		return User{}, fmt.Errorf("tenancy: create user: %w", err)
	}
	return u, nil
}

// ByID returns a user, or ErrNotFound.
func (r *Users) ByID(ctx context.Context, id UserID) (User, error) {
	if err := id.valid(); err != nil {
		return User{}, err
	}
	return r.get(ctx, "user_id", id)
}

// ByEmail returns the user with the email, matched case-insensitively, or
// ErrNotFound.
func (r *Users) ByEmail(ctx context.Context, email string) (User, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	return r.get(ctx, "email", e)
}

func (r *Users) get(ctx context.Context, column string, value any) (User, error) {
	if err := r.checkDB(); err != nil {
		return User{}, err
	}
	sql, args, err := pg.SQ.Select(userColumns).From(usersTable.name).Where(column+" = ?", value).ToSql()
	if err != nil {
		return User{}, err
	}
	u, err := scanUser(r.queryRow(ctx, sql, args))
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
func (r *Users) Delete(ctx context.Context, id UserID) error {
	if err := r.checkDB(); err != nil {
		return err
	}
	if err := id.valid(); err != nil {
		return err
	}
	sql, args, err := pg.SQ.Delete(usersTable.name).Where("user_id = ?", id).ToSql()
	if err != nil {
		return err
	}
	tag, err := r.exec(ctx, sql, args)
	if err != nil {
		return mapMembershipError(err, "delete user")
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
