package usage_test

import (
	"flag"
	"testing"

	"github.com/meterbase/meterbase/internal/pgtest"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The property test's runs each make a workspace and many statements:
	// fewer of them than rapid's default keep the package's tests quick.
	// -rapid.checks asks for more.
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "rapid.checks" })
	if !given {
		if err := flag.Set("rapid.checks", "35"); err != nil {
			panic(err)
		}
	}
	pgtest.Main(m)
}
