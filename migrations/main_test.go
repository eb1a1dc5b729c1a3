package migrations_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var schemaSeq atomic.Int64

// newSchema gives a test a schema of its own in db, and a pool whose
// search_path puts it first: meterbase's tables, functions and version table
// go there, as they would for a host that keeps meterbase in its own schema.
// Many tests can share one database this way, which is cheaper than a
// database each.
func newSchema(t *testing.T, db *pgtest.DB) *pgxpool.Pool {
	t.Helper()
	name := fmt.Sprintf("mb_test_%d", schemaSeq.Add(1))
	_, err := db.Pool.Exec(context.Background(), "CREATE SCHEMA "+name)
	require.NoError(t, err)
	return db.Connect(t, func(c *pgxpool.Config) { c.ConnConfig.RuntimeParams["search_path"] = name })
}
