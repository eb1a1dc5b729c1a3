package pgtest_test

import (
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
	t.Error("NewDB returned without a server")
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
