package pgtest

import (
	"runtime"
	"testing"
)

func TestSweepableOnlyOnThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sweeping needs /proc")
	}
	for url, want := range map[string]bool{
		"postgres://postgres@127.0.0.1:5432/postgres": true,
		"postgres://postgres@localhost/postgres":      true,
		"postgres://postgres@[::1]:5432/postgres":     true,
		"host=/var/run/postgresql user=postgres":      true,
		"postgres://postgres@10.1.2.3:5432/postgres":  false,
		"postgres://postgres@db.example.com/postgres": false,
	} {
		if got := sweepable(url); got != want {
			t.Errorf("sweepable(%q) = %v, want %v", url, got, want)
		}
	}
}
