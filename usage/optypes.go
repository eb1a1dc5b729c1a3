package usage

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/meterbase/meterbase/internal/pg"
	"github.com/meterbase/meterbase/tenancy"
)

// OperationTypeDef is an entry of the operation_types reference table.
type OperationTypeDef struct {
	Type OperationType `json:"type"`
	// Unit is what one unit of the operation measures (tokens, images,
	// seconds...): the default Unit of its events.
	Unit        string `json:"unit"`
	Description string `json:"description,omitzero"`
	Builtin     bool   `json:"builtin"` // seeded by the migrations; read only
}

// RegisterOperationTypes adds the host's own operation types, as a host
// does at startup. It is idempotent: a type already there with the same
// unit is left as it is (its description included); one with another unit,
// or a built-in one with another unit, is an *OperationTypeConflictError,
// and nothing is added. operation_types is global, so it takes the
// connection rather than a tenant.
func (s *Service) RegisterOperationTypes(ctx context.Context, db tenancy.DBTX, defs ...OperationTypeDef) error {
	if pg.IsNil(db) {
		return invalid("db", "is nil")
	}
	if len(defs) == 0 {
		return nil
	}
	types := make([]string, len(defs))
	units := make([]string, len(defs))
	descriptions := make([]string, len(defs))
	want := make(map[string]string, len(defs))
	for i, d := range defs {
		if err := d.Type.Valid(); err != nil {
			return err
		}
		if err := checkUnit(d.Unit); err != nil {
			return err
		}
		if err := checkText("operation type description", d.Description); err != nil {
			return err
		}
		if utf8.RuneCountInString(d.Description) > 500 {
			return invalid("operation type description", "is longer than 500 characters")
		}
		if u, ok := want[string(d.Type)]; ok && u != d.Unit {
			return &OperationTypeConflictError{Type: d.Type, Reason: fmt.Sprintf("given twice, with units %s and %s", u, d.Unit)}
		}
		want[string(d.Type)] = d.Unit
		types[i], units[i], descriptions[i] = string(d.Type), d.Unit, strings.TrimSpace(d.Description)
	}
	err := pg.InTx(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO operation_types (operation_type, unit, description)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT (operation_type) DO NOTHING`,
			types, units, descriptions); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT operation_type, unit FROM operation_types WHERE operation_type = ANY ($1)`, types)
		if err != nil {
			return err
		}
		var typ, unit string
		_, err = pgx.ForEachRow(rows, []any{&typ, &unit}, func() error {
			if want[typ] != unit {
				return &OperationTypeConflictError{Type: OperationType(typ), Reason: fmt.Sprintf("registered with unit %s, not %s", unit, want[typ])}
			}
			return nil
		})
		return err
	})
	if err != nil {
		if _, ok := err.(*OperationTypeConflictError); ok {
			return err
		}
		return fmt.Errorf("usage: register operation types: %w", pg.MapError(err))
	}
	s.types.add(types...)
	return nil
}

// OperationTypes lists every operation type, built-in ones first.
func (s *Service) OperationTypes(ctx context.Context, db tenancy.DBTX) ([]OperationTypeDef, error) {
	if pg.IsNil(db) {
		return nil, invalid("db", "is nil")
	}
	rows, err := db.Query(ctx, `SELECT operation_type, unit, description, builtin FROM operation_types ORDER BY builtin DESC, operation_type`)
	if err != nil {
		return nil, fmt.Errorf("usage: list operation types: %w", pg.MapError(err))
	}
	defs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (OperationTypeDef, error) {
		var d OperationTypeDef
		err := r.Scan(&d.Type, &d.Unit, &d.Description, &d.Builtin)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("usage: list operation types: %w", pg.MapError(err))
	}
	return defs, nil
}

// typeCache remembers which operation types exist, so that a Recorder can
// refuse an unknown one when it is given rather than when it is flushed.
// Types are never deleted while events use them (a foreign key), so a
// known type stays known; an unknown one is looked for again after
// unknownFor, in case another replica registered it.
type typeCache struct {
	mu      sync.Mutex
	known   map[string]bool
	unknown map[string]time.Time
}

const (
	unknownFor      = time.Second
	maxUnknownTypes = 1024
)

func newTypeCache() *typeCache {
	c := &typeCache{known: map[string]bool{}, unknown: map[string]time.Time{}}
	for _, t := range BuiltinOperationTypes() {
		c.known[string(t)] = true
	}
	return c
}

func (c *typeCache) add(types ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range types {
		c.known[t] = true
		delete(c.unknown, t)
	}
}

// check returns an *UnknownOperationTypeError for a type that db does not
// hold.
func (c *typeCache) check(ctx context.Context, db tenancy.DBTX, t OperationType) error {
	c.mu.Lock()
	known := c.known[string(t)]
	missed, recently := c.unknown[string(t)]
	c.mu.Unlock()
	if known {
		return nil
	}
	if recently && time.Since(missed) < unknownFor {
		return &UnknownOperationTypeError{Type: t}
	}
	var exists bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM operation_types WHERE operation_type = $1)`, string(t)).Scan(&exists); err != nil {
		return fmt.Errorf("usage: look up operation type %s: %w", t, pg.MapError(err))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if exists {
		c.known[string(t)] = true
		delete(c.unknown, string(t))
		return nil
	}
	if len(c.unknown) >= maxUnknownTypes {
		clear(c.unknown) // names are the host's code, not its users' input; bound them all the same
	}
	c.unknown[string(t)] = time.Now()
	return &UnknownOperationTypeError{Type: t}
}
