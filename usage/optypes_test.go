package usage_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/meterbase/meterbase/tenancy"
	"github.com/meterbase/meterbase/usage"
)

func TestOperationTypes(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	s := newService(t, nil)
	pool := w.db.Pool
	a := w.tenant(t, pool, 0)

	ocr := usage.OperationTypeDef{Type: "acme.ocr.page", Unit: "pages", Description: "A page read by OCR"}
	_, err := s.Record(ctx, a, usage.RecordParams{User: w.shared, OperationType: ocr.Type, Quantity: 1})
	require.ErrorIs(t, err, usage.ErrUnknownOperationType)
	require.NoError(t, s.RegisterOperationTypes(ctx, pool, ocr, usage.OperationTypeDef{Type: "acme.speak", Unit: "characters"}))
	require.NoError(t, s.RegisterOperationTypes(ctx, pool, ocr), "registering again is a no-op")
	r, err := s.Record(ctx, a, usage.RecordParams{User: w.shared, OperationType: ocr.Type, Quantity: 3})
	require.NoError(t, err)
	require.Equal(t, "pages", r.Event.Unit)

	// A Recorder knows it too, from the database, without registering it.
	other := newService(t, nil)
	rec, err := other.NewRecorder(pool, nil)
	require.NoError(t, err)
	require.NoError(t, rec.Record(ctx, w.ws[0], usage.RecordParams{User: w.shared, OperationType: "acme.speak", Quantity: 30}))
	require.ErrorIs(t, rec.Record(ctx, w.ws[0], usage.RecordParams{User: w.shared, OperationType: "acme.sing", Quantity: 1}), usage.ErrUnknownOperationType)
	require.NoError(t, rec.Close(ctx))

	for name, defs := range map[string][]usage.OperationTypeDef{
		"another unit":      {{Type: ocr.Type, Unit: "images"}},
		"a built-in's unit": {{Type: usage.ChatCompletion, Unit: "requests"}},
		"twice in one call": {{Type: "acme.x", Unit: "a"}, {Type: "acme.x", Unit: "b"}},
	} {
		err := s.RegisterOperationTypes(ctx, pool, defs...)
		require.ErrorIs(t, err, usage.ErrOperationTypeConflict, name)
	}
	var n int
	require.NoError(t, w.db.RawPool(t).QueryRow(ctx, `SELECT count(*) FROM operation_types WHERE operation_type = 'acme.x'`).Scan(&n))
	require.Zero(t, n, "a refused call adds nothing")
	require.NoError(t, s.RegisterOperationTypes(ctx, pool, usage.OperationTypeDef{Type: usage.ChatCompletion, Unit: "tokens"}), "a built-in as it is")

	for name, def := range map[string]usage.OperationTypeDef{
		"bad type":         {Type: "Acme OCR", Unit: "pages"},
		"bad unit":         {Type: "acme.y", Unit: "Pages"},
		"long type":        {Type: usage.OperationType(strings.Repeat("a", 65)), Unit: "pages"},
		"NUL description":  {Type: "acme.y", Unit: "pages", Description: "a\x00"},
		"long description": {Type: "acme.y", Unit: "pages", Description: strings.Repeat("é", 501)},
	} {
		require.ErrorIs(t, s.RegisterOperationTypes(ctx, pool, def), tenancy.ErrInvalidInput, name)
	}
	require.ErrorIs(t, s.RegisterOperationTypes(ctx, nil, ocr), tenancy.ErrInvalidInput)

	defs, err := s.OperationTypes(ctx, pool)
	require.NoError(t, err)
	require.Len(t, defs, 12)
	for i, b := range usage.BuiltinOperationTypes() {
		require.True(t, defs[i].Builtin, b)
	}
	require.Contains(t, defs, usage.OperationTypeDef{Type: "acme.ocr.page", Unit: "pages", Description: "A page read by OCR"})
	var builtins []usage.OperationType
	for _, d := range defs[:10] {
		builtins = append(builtins, d.Type)
	}
	require.ElementsMatch(t, usage.BuiltinOperationTypes(), builtins)
}

// The checks written out agree with the patterns of the schema's CHECK
// constraints, on random strings made of the characters that matter.
func TestChecksMatchTheSchemasPatterns(t *testing.T) {
	t.Parallel()
	patterns := map[string]*regexp.Regexp{
		"operation type": regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`),
		"unit":           regexp.MustCompile(`^[a-z][a-z_]*$`),
		"feature key":    regexp.MustCompile(`^[a-z][a-z0-9_]*([.-][a-z0-9_]+)*$`),
	}
	limits := map[string]int{"operation type": 64, "unit": 32, "feature key": 64}
	rapid.Check(t, func(rt *rapid.T) {
		s := rapid.StringOfN(rapid.SampledFrom([]rune("ab_z09.-A é")), 0, 70, -1).Draw(rt, "s")
		for name, re := range patterns {
			want := re.MatchString(s) && len(s) <= limits[name]
			require.Equal(rt, want, usage.Check(name, s), "%s %q", name, s)
		}
	})
}
