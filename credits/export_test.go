package credits

// StatementSQL returns every prepared statement of the package by name, as
// sent, for the completeness test.
func StatementSQL() map[string]string {
	out := make(map[string]string, len(statements))
	for name, s := range statements {
		out[name] = s.SQL()
	}
	return out
}

// StatementParams returns the names of a statement's parameters, in the
// order they are numbered after the handle's own.
func StatementParams(name string) []string { return statements[name].Params() }
