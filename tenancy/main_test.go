package tenancy_test

import (
	"testing"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/tenancy"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The repositories, made once as a host makes them.
var (
	workspaces = tenancy.NewWorkspaces(nil)
	members    = tenancy.NewMembers(nil)
)
