package pgserver_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A host builds meterbase's public packages, never internal/pgserver (the
// tests' and the demo's way to a server): nothing a host imports may pull
// testcontainers or a Docker client into its build.
func TestHostBuildsDoNotPullTestcontainers(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "github.com/meterbase/meterbase/...").Output()
	require.NoError(t, err)
	var public []string
	for _, p := range strings.Fields(string(out)) {
		if !strings.Contains(p, "/internal/") {
			public = append(public, p)
		}
	}
	require.Contains(t, public, "github.com/meterbase/meterbase/tenancy")
	require.Contains(t, public, "github.com/meterbase/meterbase/migrations")
	deps, err := exec.Command("go", append([]string{"list", "-deps"}, public...)...).Output()
	require.NoError(t, err)
	for _, d := range strings.Fields(string(deps)) {
		require.NotContains(t, d, "testcontainers", "a public package pulls in %s", d)
		require.NotContains(t, d, "github.com/moby/", "a public package pulls in %s", d)
		require.NotContains(t, d, "github.com/docker/", "a public package pulls in %s", d)
		require.False(t, strings.HasPrefix(d, "github.com/meterbase/meterbase/internal/pgtest"), "a public package pulls in %s", d)
	}
}
