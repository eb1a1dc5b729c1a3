package pgtest_test

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
)

// TestHelperNeedsServer is run by TestWithoutServer in a child process
// where no server can be found; run directly, it has nothing to do.
func TestHelperNeedsServer(t *testing.T) {
	if os.Getenv("MB_PGTEST_CHILD") != "1" {
		return
	}
	pgtest.NewDB(t)
	if os.Getenv("MB_PGTEST_CHILD_EXPECTS_SERVER") != "1" {
		t.Error("NewDB returned without a server")
	}
}

// Without a server the database tests skip, except under CI=true, where
// they fail.
func TestWithoutServer(t *testing.T) {
	t.Parallel()
	run := func(ci string) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperNeedsServer$", "-test.v")
		cmd.Env = append(os.Environ(),
			"MB_PGTEST_CHILD=1",
			"CI="+ci,
			pgtest.EnvURL+"=",
			"MB_TEST_LOCAL_URL=postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1",
			"DOCKER_HOST=unix:///nonexistent/docker.sock",
		)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run("true")
	require.Error(t, err, out)
	require.Contains(t, out, "CI=true and no PostgreSQL server found")
	require.Contains(t, out, "--- FAIL: TestHelperNeedsServer")

	out, err = run("")
	require.NoError(t, err, out)
	require.Contains(t, out, "--- SKIP: TestHelperNeedsServer")
	require.Contains(t, out, "set "+pgtest.EnvURL)
}

// A URL that is given but does not answer fails the tests, CI or not.
func TestBrokenExplicitURLFails(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperNeedsServer$", "-test.v")
	cmd.Env = append(os.Environ(), "MB_PGTEST_CHILD=1", "CI=",
		pgtest.EnvURL+"=postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	out, err := cmd.CombinedOutput()
	require.Error(t, err, string(out))
	require.Contains(t, string(out), "$"+pgtest.EnvURL+" is set but does not answer")
}

// Databases and roles left by a test process that died are dropped by the
// next one.
func TestOrphansAreSwept(t *testing.T) {
	t.Parallel()
	probe := pgtest.NewEmptyDB(t) // also makes sure this process has set up
	ctx := context.Background()
	// A pid that cannot be running: above the kernel's pid_max.
	const orphanDB, orphanRole = "mbt_99999999_1", "mbt_99999999_app"
	_, err := probe.Pool.Exec(ctx, `CREATE DATABASE `+orphanDB)
	require.NoError(t, err)
	_, err = probe.Pool.Exec(ctx, `CREATE ROLE `+orphanRole)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = probe.Pool.Exec(ctx, `DROP DATABASE IF EXISTS `+orphanDB)
		_, _ = probe.Pool.Exec(ctx, `DROP ROLE IF EXISTS `+orphanRole)
	})

	// A new test process sweeps at its start.
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperNeedsServer$")
	cmd.Env = append(os.Environ(), "MB_PGTEST_CHILD=1", "MB_PGTEST_CHILD_EXPECTS_SERVER=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))

	var left int
	require.NoError(t, probe.Pool.QueryRow(ctx,
		`SELECT (SELECT count(*) FROM pg_database WHERE datname = $1) + (SELECT count(*) FROM pg_roles WHERE rolname = $2)`,
		orphanDB, orphanRole).Scan(&left))
	require.Zero(t, left)
}
