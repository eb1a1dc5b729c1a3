package tenancy_test

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meterbase/meterbase/tenancy"
)

// A host's own tenant table, reached through the same handle as meterbase's.
var notes = tenancy.DefineTable("notes", tenancy.WorkspaceScoped)

func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@127.0.0.1:5432/app")
	if err != nil {
		panic(err)
	}
	ada, err := tenancy.NewUsers(pool).Create(ctx, tenancy.NewUser{Email: "ada@example.com"})
	if err != nil {
		panic(err)
	}
	ws, err := workspaces.Create(ctx, pool, tenancy.CreateWorkspaceParams{Name: "Acme", Owner: ada.ID})
	if err != nil {
		panic(err)
	}
	scope, err := tenancy.NewScope(ws.ID)
	if err != nil {
		panic(err)
	}
	acme, err := tenancy.NewTenant(pool, scope)
	if err != nil {
		panic(err)
	}
	if _, err := members.Authorize(ctx, acme, tenancy.AuthorizeParams{User: ada.ID, MinRole: tenancy.RoleOwner}); err != nil {
		panic(err)
	}

	// SELECT body FROM notes WHERE notes.workspace_id = $1 AND (pinned OR author_id = $2) ORDER BY created_at DESC LIMIT 20
	rows, err := acme.Select(notes, "body").
		Where("pinned OR author_id = ?", ada.ID).
		OrderBy("created_at DESC").Limit(20).
		Query(ctx)
	if err != nil {
		panic(err)
	}
	bodies, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		panic(err)
	}
	fmt.Println(len(bodies))
}

func ExampleTenant_InTx() {
	var acme *tenancy.Tenant // from tenancy.NewTenant
	ctx := context.Background()
	err := acme.InTx(ctx, func(tx *tenancy.Tenant) error {
		if _, err := workspaces.Rename(ctx, tx, tenancy.RenameWorkspaceParams{Name: "Acme Inc"}); err != nil {
			return err
		}
		_, err := tx.Insert(notes).Columns("body").Values("renamed").Exec(ctx)
		return err
	})
	if err != nil {
		panic(err)
	}
}

func ExampleNewOperator() {
	var pool *pgxpool.Pool // the host's
	ctx := context.Background()
	op, err := tenancy.NewOperator(pool, "admin console: workspace list")
	if err != nil {
		panic(err)
	}
	page, err := op.ListWorkspaces(ctx, tenancy.Page{Limit: 100})
	if err != nil {
		panic(err)
	}
	for _, ws := range page.Items {
		fmt.Println(ws.ID, ws.Name)
	}
}
