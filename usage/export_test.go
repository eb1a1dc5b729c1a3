package usage

import "github.com/meterbase/meterbase/tenancy"

// Statements are the package's prepared statements, by name.
func Statements() tenancy.Statements { return statements }

// OnStatement makes f hear the name of every prepared statement run, until
// the returned function is called.
func OnStatement(f func(name string)) (stop func()) {
	statementRan.Store(&f)
	return func() { statementRan.Store(nil) }
}
