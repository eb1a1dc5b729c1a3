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
		"grace spent 120, balance 380, from 1 lot(s) (promotional)",
		"grace's retry with the same key: replay=true, balance still 380",
		"pool: captured 1750 of the hold (the rest released): balance 8250, held 0",
		"pool: 40 concurrent spends of 5 by the team: all applied, balance 8050 (",
		"grace: 20 refunded to the lot they came from: balance 400",
		"linus asks for 1000: refused, 100 available",
		"reconcile: 3 accounts, 48 journal entries, ok=true",
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
