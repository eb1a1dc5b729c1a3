package tenancy_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

// exampleDatabase stands for the host's pool: a fresh, migrated database
// (migrations.Migrate has run at startup).
func exampleDatabase() *pgxpool.Pool { return pgtest.ExamplePool() }

// A host's own tenant table, reached through the same handle as meterbase's.
var notes = tenancy.DefineTable("notes", tenancy.WorkspaceScoped)

// The quickstart: users, a workspace, its members, and the tenant handle
// through which everything about the workspace goes.
func Example() {
	ctx := context.Background()
	pool := exampleDatabase()

	// Made once, at startup, and shared.
	users := tenancy.NewUsers(nil)
	workspaces := tenancy.NewWorkspaces(nil)
	members := tenancy.NewMembers(nil)

	ada, err := users.Create(ctx, pool, tenancy.CreateUserParams{Email: "ada@example.com"})
	if err != nil {
		panic(err)
	}
	grace, err := users.Create(ctx, pool, tenancy.CreateUserParams{Email: "Grace@Example.com", DisplayName: "Grace"})
	if err != nil {
		panic(err)
	}
	ws, err := workspaces.Create(ctx, pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: ada.ID})
	if err != nil {
		panic(err)
	}

	// Everything about the workspace goes through its tenant handle.
	scope, err := tenancy.NewScope(ws.ID)
	if err != nil {
		panic(err)
	}
	acme, err := tenancy.NewTenant(pool, scope)
	if err != nil {
		panic(err)
	}
	if _, err := members.Add(ctx, acme, tenancy.AddMemberParams{User: grace.ID, Role: tenancy.RoleMember}); err != nil {
		panic(err)
	}
	list, err := members.List(ctx, acme, tenancy.ListMembersParams{Page: tenancy.Page{Limit: 50, WithTotal: true}})
	if err != nil {
		panic(err)
	}
	fmt.Println("members:", *list.Total)
	for _, m := range list.Items {
		fmt.Println(m.Email, m.Role)
	}

	_, err = members.Authorize(ctx, acme, tenancy.AuthorizeParams{User: grace.ID, MinRole: tenancy.RoleAdmin})
	var forbidden *tenancy.ForbiddenError
	if errors.As(err, &forbidden) {
		fmt.Println("grace may not administer Acme: she is a", forbidden.Have)
	}
	err = members.Remove(ctx, acme, ada.ID)
	fmt.Println("remove the last owner:", errors.Is(err, tenancy.ErrLastOwner))
	// Unordered output:
	// members: 2
	// ada@example.com owner
	// grace@example.com member
	// grace may not administer Acme: she is a member
	// remove the last owner: true
}

// The builders, on a host's own tenant table: the tenant's predicate is
// written first, and the caller's, whatever it says, is one group after it.
func ExampleTenant_Select() {
	ctx := context.Background()
	pool := exampleDatabase()
	if _, err := pool.Exec(ctx, `CREATE TABLE notes (
		workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
		note_id bigint GENERATED ALWAYS AS IDENTITY, body text NOT NULL, pinned bool NOT NULL DEFAULT false,
		PRIMARY KEY (workspace_id, note_id))`); err != nil {
		panic(err)
	}
	acme, globex := exampleTenant(ctx, pool, "Acme"), exampleTenant(ctx, pool, "Globex")
	for _, tn := range []*tenancy.Tenant{acme, globex} {
		if _, err := tn.Insert(notes).Columns("body", "pinned").Values("hello", true).Exec(ctx); err != nil {
			panic(err)
		}
	}
	sel := acme.Select(notes, "count(*)").Where("pinned OR true")
	sql, _, _ := tenancy.SQLOf(sel)
	fmt.Println(sql)
	var n int
	if err := sel.QueryRow(ctx).Scan(&n); err != nil {
		panic(err)
	}
	fmt.Println("Acme's notes:", n)
	// Output:
	// SELECT count(*) FROM notes WHERE notes.workspace_id = $1 AND (pinned OR true)
	// Acme's notes: 1
}

// Hand-written SQL for what the builders cannot say: tenant tables are
// written {table}, and the handle expands each into a reference that only
// reaches the tenant's rows, whatever the rest says. Prepare it once, at
// load (tenancy.MustPrepareFS over an embed.FS, for a package's files).
var busiest = tenancy.MustPrepare("busiest role", `
	WITH counts AS (SELECT role, count(*) AS n FROM {memberships} GROUP BY role)
	SELECT role, n FROM counts WHERE n >= @min OR true ORDER BY n DESC, role LIMIT 1`)

func ExamplePrepare() {
	ctx := context.Background()
	pool := exampleDatabase()
	acme := exampleTenant(ctx, pool, "Acme")
	exampleTenant(ctx, pool, "Globex")

	var role string
	var n int
	if err := acme.QueryRow(ctx, busiest, tenancy.Args{"min": 1}).Scan(&role, &n); err != nil {
		panic(err)
	}
	fmt.Println(role, n)
	_, err := acme.Exec(ctx, busiest, tenancy.Args{"minimum": 1})
	fmt.Println(errors.Is(err, tenancy.ErrInvalidInput))
	_, err = tenancy.Prepare("bare", `SELECT count(*) FROM memberships`)
	fmt.Println(errors.Is(err, tenancy.ErrUnsafeSQL))
	// Output:
	// owner 1
	// true
	// true
}

func ExampleTenant_InTx() {
	ctx := context.Background()
	pool := exampleDatabase()
	acme := exampleTenant(ctx, pool, "Acme")
	workspaces := tenancy.NewWorkspaces(nil)
	err := acme.InTx(ctx, func(tx *tenancy.Tenant) error {
		if _, err := workspaces.Rename(ctx, tx, tenancy.RenameWorkspaceParams{Name: "Acme Inc"}); err != nil {
			return err
		}
		return errors.New("changed my mind") // rolls the rename back
	})
	ws, _ := workspaces.Get(ctx, acme)
	fmt.Println(err, "-", ws.Name)
	// Output: changed my mind - Acme
}

func ExampleNewOperator() {
	ctx := context.Background()
	pool := exampleDatabase()
	exampleTenant(ctx, pool, "Acme")
	exampleTenant(ctx, pool, "Globex")
	op, err := tenancy.NewOperator(pool, "admin console: workspace list")
	if err != nil {
		panic(err)
	}
	page, err := op.ListWorkspaces(ctx, tenancy.Page{Limit: 100, WithTotal: true})
	if err != nil {
		panic(err)
	}
	fmt.Println(*page.Total, "workspaces")
	// Output: 2 workspaces
}

// exampleTenant makes a workspace with an owner and returns its handle.
func exampleTenant(ctx context.Context, pool *pgxpool.Pool, name string) *tenancy.Tenant {
	owner, err := tenancy.NewUsers(nil).Create(ctx, pool, tenancy.CreateUserParams{Email: "owner@" + name + ".example"})
	if err != nil {
		panic(err)
	}
	ws, err := tenancy.NewWorkspaces(nil).Create(ctx, pool, tenancy.CreateWorkspaceParams{Name: name, Owner: owner.ID})
	if err != nil {
		panic(err)
	}
	scope, err := tenancy.NewScope(ws.ID)
	if err != nil {
		panic(err)
	}
	tn, err := tenancy.NewTenant(pool, scope)
	if err != nil {
		panic(err)
	}
	return tn
}

// A repository of a package of its own, built on the public surface alone,
// as credits and usage are: a tenant table, an id kind, prepared SQL and a
// cursor-paginated list. (Here the host's notes table.)
type noteKind struct{}

func (noteKind) IDKind() string { return "note" }

// NoteID identifies a note.
type NoteID = tenancy.ID[noteKind]

type Note struct {
	ID   NoteID `json:"id"`
	Body string `json:"body"`
}

// Notes is the repository: made once, shared, the tenant per call.
type Notes struct{}

var addNote = tenancy.MustPrepare("notes.add",
	`INSERT INTO {notes} (note_id, body) VALUES (@id, @body) RETURNING note_id, body`)

var listNotes = tenancy.MustPrepare("notes.list", `
	SELECT note_id, body FROM {notes}
	WHERE @after::uuid IS NULL OR note_id > @after
	ORDER BY note_id LIMIT @limit`)

func (Notes) Add(ctx context.Context, t *tenancy.Tenant, body string) (Note, error) {
	var n Note
	err := t.QueryRow(ctx, addNote, tenancy.Args{"id": tenancy.NewID[noteKind](), "body": body}).Scan(&n.ID, &n.Body)
	return n, err
}

func (Notes) List(ctx context.Context, t *tenancy.Tenant, page tenancy.Page) (tenancy.List[Note], error) {
	q, err := page.Query(t, "example.notes")
	if err != nil {
		return tenancy.List[Note]{}, err
	}
	var after any
	if q.After != nil {
		after = q.After.ID
	}
	rows, err := t.Query(ctx, listNotes, tenancy.Args{"after": after, "limit": q.Limit + 1})
	if err != nil {
		return tenancy.List[Note]{}, err
	}
	notes, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Note])
	if err != nil {
		return tenancy.List[Note]{}, err
	}
	return tenancy.Paginate(t, "example.notes", q, notes, func(n Note) tenancy.Keyset { return tenancy.Keyset{ID: n.ID.UUID()} }), nil
}

func Example_ownRepository() {
	ctx := context.Background()
	pool := exampleDatabase()
	if _, err := pool.Exec(ctx, `CREATE TABLE notes (
		workspace_id uuid NOT NULL REFERENCES workspaces ON DELETE CASCADE,
		note_id uuid NOT NULL, body text NOT NULL, PRIMARY KEY (workspace_id, note_id))`); err != nil {
		panic(err)
	}
	acme, globex := exampleTenant(ctx, pool, "Acme"), exampleTenant(ctx, pool, "Globex")
	var notes Notes
	for _, body := range []string{"one", "two", "three"} {
		if _, err := notes.Add(ctx, acme, body); err != nil {
			panic(err)
		}
	}
	if _, err := notes.Add(ctx, globex, "Globex's own"); err != nil {
		panic(err)
	}
	page := tenancy.Page{Limit: 2}
	for {
		list, err := notes.List(ctx, acme, page)
		if err != nil {
			panic(err)
		}
		for _, n := range list.Items {
			fmt.Println(n.Body)
		}
		if list.Next == "" {
			break
		}
		page.Cursor = list.Next
	}
	// A cursor of Acme's list means nothing to Globex.
	first, _ := notes.List(ctx, acme, tenancy.Page{Limit: 1})
	_, err := notes.List(ctx, globex, tenancy.Page{Limit: 1, Cursor: first.Next})
	fmt.Println(errors.Is(err, tenancy.ErrInvalidCursor))
	// Output:
	// one
	// two
	// three
	// true
}
