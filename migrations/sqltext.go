package migrations

import (
	"regexp"
	"strings"
)

// sqlCode returns sql with its comments (-- to the end of the line, and
// /* ... */, nested as Postgres nests them) blanked out, every character
// of them a space but newlines kept, so that an offset into the code is the
// same offset into sql. String literals, quoted identifiers and
// dollar-quoted bodies are kept as they are: what looks like a comment
// inside them is not one.
func sqlCode(sql string) string {
	code, _ := scanSQL(sql)
	return code
}

// sqlStatements splits sql into its top-level statements, each the
// statement's code (see sqlCode) trimmed, empty ones left out. A semicolon
// inside a literal, a quoted identifier or a dollar-quoted body splits
// nothing.
func sqlStatements(sql string) []string {
	code, semicolons := scanSQL(sql)
	var out []string
	start := 0
	for _, end := range append(semicolons, len(code)) {
		if s := strings.TrimSpace(code[start:end]); s != "" {
			out = append(out, s)
		}
		start = min(end+1, len(code))
	}
	return out
}

// scanSQL blanks sql's comments (see sqlCode) and returns the offsets of
// the semicolons that end its top-level statements. Unterminated comments,
// literals and bodies run to the end of the text, as Postgres would reject
// them anyway.
func scanSQL(sql string) (code string, semicolons []int) {
	b := []byte(sql)
	n := len(sql)
	blank := func(from, to int) {
		for k := from; k < to; k++ {
			if b[k] != '\n' {
				b[k] = ' '
			}
		}
	}
	// quoted returns where the literal or identifier opened at i ends:
	// a doubled quote stays inside, and so does a backslashed one in an
	// E'...' string.
	quoted := func(i int, q byte, backslash bool) int {
		for j := i + 1; j < n; j++ {
			switch {
			case backslash && sql[j] == '\\':
				j++
			case sql[j] == q && j+1 < n && sql[j+1] == q:
				j++
			case sql[j] == q:
				return j + 1
			}
		}
		return n
	}
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == '-' && strings.HasPrefix(sql[i:], "--"):
			end := n
			if j := strings.IndexByte(sql[i:], '\n'); j >= 0 {
				end = i + j
			}
			blank(i, end)
			i = end
		case c == '/' && strings.HasPrefix(sql[i:], "/*"):
			j, depth := i, 0
			for j < n {
				if strings.HasPrefix(sql[j:], "/*") {
					depth++
					j += 2
					continue
				}
				if strings.HasPrefix(sql[j:], "*/") {
					depth--
					j += 2
					if depth == 0 {
						break
					}
					continue
				}
				j++
			}
			blank(i, j)
			i = j
		case c == '\'':
			escapes := i > 0 && (sql[i-1] == 'e' || sql[i-1] == 'E') && (i < 2 || !identChar(sql[i-2]))
			i = quoted(i, '\'', escapes)
		case c == '"':
			i = quoted(i, '"', false)
		case c == '$' && (i == 0 || !identChar(sql[i-1])):
			// $tag$ ... $tag$, the tag empty or an identifier without $;
			// $1 is a parameter, not a quote.
			k := i + 1
			for k < n && (sql[k] == '_' || isLetter(sql[k]) || (k > i+1 && isDigit(sql[k]))) {
				k++
			}
			if k >= n || sql[k] != '$' {
				i++
				break
			}
			tag := sql[i : k+1]
			if end := strings.Index(sql[k+1:], tag); end >= 0 {
				i = k + 1 + end + len(tag)
			} else {
				i = n
			}
		case c == ';':
			semicolons = append(semicolons, i)
			i++
		default:
			i++
		}
	}
	return string(b), semicolons
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' || c >= 0x80 }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

// identChar reports whether c can continue an identifier (Postgres allows
// $ after the first character), so that a quote or $ after it opens
// nothing.
func identChar(c byte) bool { return isLetter(c) || isDigit(c) || c == '_' || c == '$' }

var (
	concurrently = regexp.MustCompile(`(?i)\bconcurrently\b`)
	// Statements that end or open a transaction block: one of them in a
	// file splits it into transactions that commit apart.
	transactionControl = regexp.MustCompile(`(?i)^(begin|start|commit|end|rollback|abort|prepare\s+transaction)\b`)
)

// isTransactional reports whether Postgres runs the file as one implicit
// transaction, which either commits whole or leaves nothing behind. CREATE
// (or DROP, or REINDEX) ... CONCURRENTLY cannot run in one, so the lint
// test makes it stand alone in its file, which then commits as it goes; a
// statement of transaction control splits the file into transactions. The
// migrator counts on the answer: it appends the version record to a
// transactional file and, when such a file fails, sets the version back as
// if it had never run. So a doubt counts as not transactional: the word
// CONCURRENTLY anywhere in the code (a literal included, comments not).
func isTransactional(sql string) bool {
	if concurrently.MatchString(sqlCode(sql)) {
		return false
	}
	for _, s := range sqlStatements(sql) {
		if transactionControl.MatchString(s) {
			return false
		}
	}
	return true
}
