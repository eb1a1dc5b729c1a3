package tenancy_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The repositories, made once as a host makes them.
var (
	users      = tenancy.NewUsers(nil)
	workspaces = tenancy.NewWorkspaces(nil)
	members    = tenancy.NewMembers(nil)
)

// requireNoTenantContext checks that err is the refusal a role bound by
// row-level security gets when its transaction sets no tenant context
// (SQLSTATE MB001), raw or translated.
func requireNoTenantContext(t *testing.T, err error, msgAndArgs ...any) {
	t.Helper()
	if errors.Is(err, tenancy.ErrNoTenantContext) {
		return
	}
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, msgAndArgs...)
	require.Equal(t, "MB001", pgErr.Code, msgAndArgs...)
}

// requireNothingVisible checks, in a savepoint so that tx stays usable,
// that the host's raw SQL in tx runs with no tenant's context: a bound
// role is refused rather than shown anyone's rows.
func requireNothingVisible(t *testing.T, tx pgx.Tx, table string) {
	t.Helper()
	ctx := context.Background()
	sp, err := tx.Begin(ctx)
	require.NoError(t, err)
	defer sp.Rollback(ctx) //nolint:errcheck
	var n int
	// "Every row", in a shape the tenant tracer lets by.
	err = sp.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE workspace_id = $1 OR workspace_id <> $1`, tenancy.NewWorkspaceID()).Scan(&n)
	requireNoTenantContext(t, err, "a tenant's or the operator's context outlived the call")
}
