package usage_test

import (
	"testing"

	"github.com/meterbase/meterbase/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
