package pgserver_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgserver"
)

func TestExplicitURLMustAnswer(t *testing.T) {
	t.Setenv("MB_PGSERVER_TEST_URL", "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	_, err := pgserver.Find(context.Background(), "MB_PGSERVER_TEST_URL")
	require.Error(t, err)
	require.Contains(t, err.Error(), "$MB_PGSERVER_TEST_URL is set but does not answer")
	require.False(t, errors.Is(err, pgserver.ErrNoServer), "a broken explicit URL is a failure, not a missing server")
}

func TestExplicitURLWins(t *testing.T) {
	url := os.Getenv("MB_TEST_DATABASE_URL")
	if url == "" {
		url = pgserver.LocalURL
	}
	t.Setenv("MB_PGSERVER_TEST_EMPTY", "")
	t.Setenv("MB_PGSERVER_TEST_URL", url)
	srv, err := pgserver.Find(context.Background(), "MB_PGSERVER_TEST_EMPTY", "MB_PGSERVER_TEST_URL")
	require.NoError(t, err)
	require.Equal(t, "$MB_PGSERVER_TEST_URL", srv.Source, "the first variable that is set wins")
	require.Equal(t, url, srv.URL)
	require.NoError(t, srv.Close(context.Background()), "a found server is left running")
}
