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
