package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgserver"
)

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), &out)
	if errors.Is(err, pgserver.ErrNoServer) && os.Getenv("CI") != "true" {
		t.Skipf("no PostgreSQL server: %v", err)
	}
	require.NoError(t, err)
	for _, want := range []string{
		"migrated from version 0 to",
		"linus@example.com      member",
		"may linus administer Acme? no:",
		"may barbara (of Globex) read Acme? no: tenancy: not a member",
		"remove Acme's only owner? no: tenancy: a workspace must keep at least one owner",
		"operator (demo: list every workspace) sees 2 workspaces",
		"recorded 12 usage events for Acme (1 duplicate skipped)",
		"recorded 24 usage events for Globex (1 duplicate skipped)",
		"  chat.completion      4 events    2200 units    4 credits",
		"  total               12 events    7800 units   24 credits",
		"  total               24 events   30000 units   48 credits",
		"dirty=false, pending=0",
		"dropped database meterbase_demo_",
	} {
		require.Contains(t, out.String(), want)
	}
}
