package tenancy

import (
	"testing"
)

// A value above Postgres's 1 GB field limit is refused in the rows'
// error, as a type mismatch is: its length, written in 32 bits, would
// wrap (2^32+5 bytes would get the header of 5, and the rest be read as
// further fields and rows of the caller's making; 2^32-1, a NULL).
// (Calling Text with a 4 GiB string is too heavy for a test: field, which
// Text, Bytea and JSONB call with len(v), is checked.)
func TestStageRowsRefuseValuesAboveTheFieldLimit(t *testing.T) {
	t.Parallel()
	s := DefineStage("field_limit", StageColumn{Name: "t", Type: "text"})
	for _, n := range []int{1<<32 + 5, 1<<32 - 1, 1 << 31, maxFieldBytes + 1} {
		r := s.NewRows(0)
		before := len(r.buf)
		if r.field(kindText, n) || r.err == nil {
			t.Errorf("a value of %d bytes is accepted", n)
		}
		if len(r.buf) != before {
			t.Errorf("a value of %d bytes wrote %d bytes of header", n, len(r.buf)-before)
		}
	}
	r := s.NewRows(0)
	if !r.field(kindText, maxFieldBytes) || r.err != nil {
		t.Errorf("a value of exactly the limit is refused: %v", r.err)
	}
}
