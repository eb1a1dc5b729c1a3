package migrations_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/meterbase/meterbase/internal/pgtest"
	"github.com/meterbase/meterbase/migrations"
)

// upgradeFixture is the data that stands for a host's rows at one version.
type upgradeFixture struct {
	// fill runs (as one transaction, by the owner of the tables) right after
	// the migration is applied. It writes representative rows into every
	// table the migration creates or changes: the awkward ones too (longest
	// names, largest amounts, NULLs, rows the migration's new rules would
	// refuse but that older versions allowed).
	fill string
	// check, when set, runs after the migration is applied on top of the
	// earlier fixtures' rows, for what the generic comparison cannot see
	// (a backfill's values, say).
	check func(ctx context.Context, pool *pgxpool.Pool) error
}

// upgradeFixtures holds one entry per embedded migration, by version. A new
// migration fails TestUpgradeKeepsData until it has one.
var upgradeFixtures = map[uint]upgradeFixture{
	1: {fill: `
		INSERT INTO users (user_id, email, display_name, created_at) VALUES
		    ('00000000-0000-4000-8000-000000000001', 'ada@example.com', 'Ada Lovelace', '2024-01-02 03:04:05.123456+00'),
		    ('00000000-0000-4000-8000-000000000002', 'grace@example.com', '', '2024-02-29 23:59:59.999999+00'),
		    ('00000000-0000-4000-8000-000000000003', 'zoë+tag@exämple.org', repeat('é', 200), now()),
		    ('00000000-0000-4000-8000-000000000004', 'orphan@example.com', 'in no workspace', now());
		INSERT INTO workspaces (workspace_id, name, created_at, updated_at) VALUES
		    ('00000000-0000-4000-9000-000000000001', 'Analytical Engines', '2024-01-02 03:04:05+00', '2024-03-01 00:00:00+00'),
		    ('00000000-0000-4000-9000-000000000002', repeat('w', 200), now(), now()),
		    -- Before 0003 nothing kept a workspace from losing its last owner.
		    ('00000000-0000-4000-9000-000000000003', 'no owner left', now(), now());
		INSERT INTO memberships (workspace_id, user_id, role) VALUES
		    ('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-8000-000000000001', 'owner'),
		    ('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-8000-000000000002', 'admin'),
		    ('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-8000-000000000003', 'member'),
		    ('00000000-0000-4000-9000-000000000002', '00000000-0000-4000-8000-000000000002', 'owner'),
		    ('00000000-0000-4000-9000-000000000002', '00000000-0000-4000-8000-000000000003', 'owner'),
		    ('00000000-0000-4000-9000-000000000003', '00000000-0000-4000-8000-000000000001', 'member');`},
	2: {fill: `
		INSERT INTO operation_types (operation_type, description, unit) VALUES
		    ('acme.ocr.page', 'Host-defined: a page read by OCR', 'pages');
		UPDATE operation_types SET description = 'Changed by the host' WHERE operation_type = 'rerank';
		INSERT INTO features (feature_key, operation_type, description, price_credits, unit_quantity, active) VALUES
		    ('chat-gpt-large', 'chat.completion', 'Large chat model', 15, 1000, true),
		    ('ocr', 'acme.ocr.page', '', 0, 1, false),
		    -- Beyond float64's exact integers: money must survive as int64.
		    ('video.premium', 'video.generation', repeat('d', 500), 9007199254740993, 9223372036854775807, true);`},
	3: {fill: `
		INSERT INTO users (user_id, email) VALUES ('00000000-0000-4000-8000-000000000005', 'late@example.com');
		INSERT INTO workspaces (workspace_id, name) VALUES ('00000000-0000-4000-9000-000000000004', 'after the trigger');
		INSERT INTO memberships (workspace_id, user_id, role) VALUES
		    ('00000000-0000-4000-9000-000000000004', '00000000-0000-4000-8000-000000000005', 'owner'),
		    ('00000000-0000-4000-9000-000000000004', '00000000-0000-4000-8000-000000000001', 'member');
		-- The second owner may go; the trigger stamps the workspace row.
		DELETE FROM memberships WHERE workspace_id = '00000000-0000-4000-9000-000000000002' AND user_id = '00000000-0000-4000-8000-000000000003';`},
	4: {fill: `
		INSERT INTO users (user_id, email) VALUES ('00000000-0000-4000-8000-000000000006', 'rls@example.com');
		INSERT INTO workspaces (workspace_id, name) VALUES ('00000000-0000-4000-9000-000000000005', 'under row security');
		INSERT INTO memberships (workspace_id, user_id, role) VALUES
		    ('00000000-0000-4000-9000-000000000005', '00000000-0000-4000-8000-000000000006', 'owner');`,
		// Row security must not hide the rows written before it from the
		// tenant they belong to.
		check: func(ctx context.Context, pool *pgxpool.Pool) error {
			tx, err := pool.Begin(ctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(ctx) //nolint:errcheck // the probe role goes with it
			var schema string
			if err := tx.QueryRow(ctx, `SELECT quote_ident(current_schema())`).Scan(&schema); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `CREATE ROLE upgrade_probe NOLOGIN NOBYPASSRLS;
				GRANT USAGE ON SCHEMA `+schema+` TO upgrade_probe;
				GRANT SELECT ON workspaces, memberships TO upgrade_probe;
				SET LOCAL ROLE upgrade_probe;
				SELECT set_config('meterbase.workspace_id', '00000000-0000-4000-9000-000000000001', true);`); err != nil {
				return err
			}
			var workspaces, members int
			if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM workspaces), (SELECT count(*) FROM memberships)`).Scan(&workspaces, &members); err != nil {
				return err
			}
			if workspaces != 1 || members != 3 {
				return fmt.Errorf("under row security a tenant sees %d workspace(s) and %d membership(s) of its own, want 1 and 3", workspaces, members)
			}
			return nil
		}},
	5: {fill: `
		INSERT INTO users (user_id, email) VALUES ('00000000-0000-4000-8000-000000000007', 'forced@example.com');
		-- The owner may come after the workspace: the owner check waits
		-- for the commit.
		INSERT INTO workspaces (workspace_id, name) VALUES ('00000000-0000-4000-9000-000000000006', 'under force');
		INSERT INTO memberships (workspace_id, user_id, role) VALUES
		    ('00000000-0000-4000-9000-000000000006', '00000000-0000-4000-8000-000000000007', 'owner'),
		    ('00000000-0000-4000-9000-000000000006', '00000000-0000-4000-8000-000000000006', 'member');
		-- A workspace deleted again before the commit needs no owner.
		INSERT INTO workspaces (workspace_id, name) VALUES ('00000000-0000-4000-9000-000000000007', 'gone before commit');
		DELETE FROM workspaces WHERE workspace_id = '00000000-0000-4000-9000-000000000007';`,
		check: checkVersion5},
	6: {fill: `
		-- Through the ledger's own functions, so that every credit table
		-- holds rows as the library writes them: the largest amounts and
		-- limit, the longest reference and metadata, a member's account, a
		-- scheduled grant, spends into debt, a partial capture, a refund,
		-- a void, an expired hold and lot journaled by a sweep.
		SELECT set_config('meterbase.workspace_id', '00000000-0000-4000-9000-000000000001', true);
		SELECT meterbase_credit_open_account('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-a000-000000000001', NULL, 1000000000000000, '2024-06-01 00:00:00+00');
		SELECT meterbase_credit_open_account('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-a000-000000000002', '00000000-0000-4000-8000-000000000003', 0, '2024-06-01 00:00:00+00');
		SELECT meterbase_credit_grant('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-a000-000000000001', 1000000000000000, -2147483648,
		    NULL, '2024-07-01 00:00:00+00', 'promotional', jsonb_build_object('note', repeat('m', 4000)), repeat('r', 255), repeat('k', 255), sha256('g1'), '2024-06-01 00:00:00+00');
		SELECT meterbase_credit_grant('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-a000-000000000001', 500, 0,
		    NULL, NULL, 'purchase', '{}', '', 'g2', sha256('g2'), '2024-06-01 00:00:00+00');
		SELECT meterbase_credit_grant('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-a000-000000000002', 70, 2147483647,
		    '2024-06-15 00:00:00+00', NULL, 'plan', '{"plan": "pro"}', 'june', 'g3', sha256('g3'), '2024-06-01 00:00:00+00');
		SELECT meterbase_credit_spend('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-a000-000000000001', 1000000000000000, 'zoë''s job', 's1', sha256('s1'), '2024-06-02 00:00:00+00');
		SELECT meterbase_credit_hold('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-a000-000000000001', 300, 3600000000, 'h1', 'h1', sha256('h1'), '2024-06-02 00:00:00+00');
		SELECT meterbase_credit_capture('00000000-0000-4000-9000-000000000001', (SELECT hold_id FROM credit_holds WHERE reference = 'h1'), 100, '', 'c1', sha256('c1'), '2024-06-02 00:30:00+00');
		SELECT meterbase_credit_spend('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-a000-000000000001', 900, '', 's2', sha256('s2'), '2024-06-02 01:00:00+00');
		SELECT meterbase_credit_refund('00000000-0000-4000-9000-000000000001', (SELECT entry_id FROM credit_entries WHERE reference = 'zoë''s job'), 10, 'sorry', 'r1', sha256('r1'), '2024-06-03 00:00:00+00');
		SELECT meterbase_credit_hold('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-a000-000000000001', 5, 60000000, 'h2', 'h2', sha256('h2'), '2024-06-03 00:00:00+00');
		SELECT meterbase_credit_void('00000000-0000-4000-9000-000000000001', (SELECT grant_id FROM credit_grants WHERE category = 'purchase'), 'v1', sha256('v1'), '2024-06-04 00:00:00+00');
		SELECT meterbase_credit_sweep('00000000-0000-4000-9000-000000000001', NULL, 100, '2024-08-01 00:00:00+00');`},
	7: {fill: `
		-- Every column, the awkward values too: the largest amounts, the
		-- longest texts, metadata at its bound, no key, a voided event, a
		-- failed one, the earliest time allowed, a host's operation type.
		INSERT INTO usage_events (workspace_id, event_id, user_id, operation_type, feature_key, unit, quantity, credits,
		                          price_credits, price_unit_quantity, model, status, duration_ms, metadata, idempotency_key,
		                          request_hash, ledger_entry_id, occurred_at, recorded_at, voided_at, version, updated_at) VALUES
		    ('00000000-0000-4000-9000-000000000001', '00000000-0000-7000-a000-000000000001', '00000000-0000-4000-8000-000000000001',
		     'chat.completion', 'chat-gpt-large', 'input_tokens', 1125899906842624, 1125899906842624, 1125899906842624, 1125899906842624,
		     repeat('m', 200), 'succeeded', 31536000000, jsonb_build_object('k', repeat('x', 65000)), repeat('k', 255),
		     '\x000102030405060708090a0b0c0d0e0f', '00000000-0000-4000-b000-000000000001',
		     '2000-01-01 00:00:00+00', '2024-01-01 00:00:00.123456+00', NULL, 1, now()),
		    ('00000000-0000-4000-9000-000000000001', '00000000-0000-7000-a000-000000000002', '00000000-0000-4000-8000-000000000002',
		     'acme.ocr.page', '', 'pages', 0, 0, 0, 1, '', 'failed', 0, NULL, NULL, NULL, NULL,
		     '2024-02-29 23:59:59.999999+00', now(), NULL, 1, now()),
		    ('00000000-0000-4000-9000-000000000002', '00000000-0000-7000-a000-000000000003', '00000000-0000-4000-8000-000000000002',
		     'embedding', 'ocr', 'tokens', 7, 3, 3, 1000, 'émbed', 'succeeded', 12, '{}', 'ключ', '\xffffffffffffffffffffffffffffffff', NULL,
		     '2024-03-10 07:30:00+00', now(), '2024-03-11 00:00:00+00', 2, now());
		INSERT INTO usage_adjustments (workspace_id, adjustment_id, event_id, kind, reason, quantity_before, quantity_after,
		                               credits_before, credits_after, event_version, actor_user_id, idempotency_key, request_hash, created_at) VALUES
		    ('00000000-0000-4000-9000-000000000002', '00000000-0000-7000-c000-000000000001', '00000000-0000-7000-a000-000000000003',
		     'void', repeat('r', 500), 7, 7, 3, 3, 2, '00000000-0000-4000-8000-000000000002', repeat('v', 255), '\x00000000000000000000000000000000', now()),
		    ('00000000-0000-4000-9000-000000000001', '00000000-0000-7000-c000-000000000002', '00000000-0000-7000-a000-000000000001',
		     'correction', 'provider report', 1125899906842624, 0, 1125899906842624, 0, 9223372036854775807, NULL, NULL, NULL, now());
		INSERT INTO usage_retention (workspace_id, deleted_before) VALUES
		    ('00000000-0000-4000-9000-000000000002', '2000-01-01 00:00:00+00');
		-- The triggers kept the rollups: each event that is not voided
		-- counts once per dimension and grain, the correction's update
		-- included.
		UPDATE usage_events SET quantity = 0, credits = 0, version = 2 WHERE event_id = '00000000-0000-7000-a000-000000000001';
		DO $check$
		BEGIN
		    IF (SELECT array_agg(DISTINCT (dimension, grain, events, failed, quantity, credits)::text)
		          FROM (SELECT dimension, grain, sum(events) AS events, sum(failed) AS failed, sum(quantity) AS quantity, sum(credits) AS credits
		                  FROM usage_rollups GROUP BY 1, 2) r) IS DISTINCT FROM
		       (SELECT array_agg(DISTINCT (d, g, 2, 1, 0, 0)::text) FROM unnest('{total,operation_type,feature,user,model,unit}'::text[]) d, unnest('{15,60,1440}'::int[]) g) THEN
		        RAISE EXCEPTION 'usage_rollups do not add up to the events';
		    END IF;
		END;
		$check$;`},
	8: {fill: `
		-- A batch as the ledger sends it: two spends, a refusal, a hold and
		-- a capture of an earlier hold, each with its own outcome; the
		-- refusal leaves nothing behind.
		SELECT set_config('meterbase.workspace_id', '00000000-0000-4000-9000-000000000001', true);
		SELECT count(*) FROM meterbase_credit_batch('00000000-0000-4000-9000-000000000001', '00000000-0000-4000-a000-000000000001',
		    ARRAY['spend', 'spend', 'spend', 'hold', 'release'],
		    ARRAY[NULL, NULL, NULL, NULL, (SELECT hold_id FROM credit_holds WHERE reference = 'h2')]::uuid[],
		    ARRAY[7, 1000000000000000, 3, 11, 0]::bigint[], ARRAY[0, 0, 0, 60000000, 0]::bigint[],
		    ARRAY['batch one', '', repeat('b', 255), 'batch hold', ''],
		    ARRAY['b1', 'b2', repeat('b', 255), 'b4', 'b5'],
		    ARRAY[sha256('b1'), sha256('b2'), sha256('b3'), sha256('b4'), sha256('b5')], '2024-08-02 00:00:00+00');`},
}

// checkVersion5 runs on the rows of versions 1 to 4: nothing existing is
// refused or hidden from the tenant it belongs to (the ownerless workspace
// of version 1 included), users is now reached through memberships, and a
// bound role without any context gets MB001 rather than no rows.
func checkVersion5(ctx context.Context, pool *pgxpool.Pool) error {
	var unforced []string
	rows, err := pool.Query(ctx, `
		SELECT c.relname::text FROM pg_class c
		 WHERE c.oid IN ('users'::regclass, 'workspaces'::regclass, 'memberships'::regclass)
		   AND NOT (c.relrowsecurity AND c.relforcerowsecurity) ORDER BY 1`)
	if err != nil {
		return err
	}
	if unforced, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return err
	}
	if len(unforced) > 0 {
		return fmt.Errorf("row security is not enabled and forced on %v", unforced)
	}

	// as runs sql as a fresh role that neither owns the tables nor
	// bypasses row security, with the given settings, and rolls back.
	as := func(settings map[string]string, sql string, dest ...any) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx) //nolint:errcheck // the probe role goes with it
		var schema string
		if err := tx.QueryRow(ctx, `SELECT quote_ident(current_schema())`).Scan(&schema); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE ROLE upgrade_probe_v5 NOLOGIN NOBYPASSRLS;
			GRANT USAGE ON SCHEMA `+schema+` TO upgrade_probe_v5;
			GRANT SELECT, UPDATE ON users, workspaces, memberships TO upgrade_probe_v5;
			SET LOCAL ROLE upgrade_probe_v5`); err != nil {
			return err
		}
		for name, value := range settings {
			if _, err := tx.Exec(ctx, `SELECT set_config($1, $2, true)`, name, value); err != nil {
				return err
			}
		}
		return tx.QueryRow(ctx, sql).Scan(dest...)
	}
	const ws1, ownerless = "00000000-0000-4000-9000-000000000001", "00000000-0000-4000-9000-000000000003"

	var emails []string
	if err := as(map[string]string{"meterbase.workspace_id": ws1}, `SELECT array_agg(email ORDER BY email) FROM users`, &emails); err != nil {
		return fmt.Errorf("a tenant reads its members: %w", err)
	}
	if want := []string{"ada@example.com", "grace@example.com", "zoë+tag@exämple.org"}; !slices.Equal(emails, want) {
		return fmt.Errorf("tenant 1 reads users %v, want its members %v", emails, want)
	}
	var all int
	if err := as(map[string]string{"meterbase.operator": "upgrade check"}, `SELECT count(*) FROM users`, &all); err != nil {
		return fmt.Errorf("the operator reads every user: %w", err)
	}
	if all != 6 {
		return fmt.Errorf("the operator reads %d users, want all 6", all)
	}
	// Rows that older versions allowed stay usable: the workspace that lost
	// its owner before 0003 is still its tenant's, and may be renamed (the
	// owner check is for new workspaces only).
	var renamed int
	if err := as(map[string]string{"meterbase.workspace_id": ownerless},
		`WITH r AS (UPDATE workspaces SET name = name || '.' RETURNING 1) SELECT count(*) FROM r`, &renamed); err != nil {
		return fmt.Errorf("rename the ownerless workspace: %w", err)
	}
	if renamed != 1 {
		return fmt.Errorf("its tenant renamed %d ownerless workspace(s), want 1", renamed)
	}
	var moved int
	err = as(map[string]string{"meterbase.workspace_id": ws1},
		`WITH r AS (UPDATE workspaces SET workspace_id = gen_random_uuid() RETURNING 1) SELECT count(*) FROM r`, &moved)
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.ConstraintName != "workspaces_id_is_fixed" {
		return fmt.Errorf("a workspace's id changed: got %v, want workspaces_id_is_fixed", err)
	}
	var n int
	err = as(nil, `SELECT count(*) FROM workspaces`, &n)
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "MB001" {
		return fmt.Errorf("a bound role without context: got %v (%d rows), want SQLSTATE MB001", err, n)
	}
	return nil
}

// TestUpgradeKeepsData runs checkUpgrade for every embedded migration.
func TestUpgradeKeepsData(t *testing.T) {
	t.Parallel()
	list := migrations.List()
	db := pgtest.NewEmptyDB(t)
	for _, mig := range list {
		t.Run(fmt.Sprintf("%04d_%s", mig.Version, mig.Name), func(t *testing.T) {
			t.Parallel()
			if _, ok := upgradeFixtures[mig.Version]; !ok {
				t.Fatalf("migration %04d_%s has no upgrade fixture: add an entry to upgradeFixtures (upgrade_test.go) "+
					"that fills every table it creates or changes", mig.Version, mig.Name)
			}
			pool := newSchema(t, db)
			m, err := migrations.New(pool, nil)
			require.NoError(t, err)
			require.NoError(t, checkUpgrade(context.Background(), pool, m, list, upgradeFixtures, mig.Version))
		})
	}
	for v := range upgradeFixtures {
		require.LessOrEqual(t, v, uint(len(list)), "upgradeFixtures has an entry for version %d, which does not exist", v)
	}
}

// checkUpgrade proves on an empty database that migration version keeps the
// data of a host that has used every earlier version:
//
//  1. walk up to version-1, filling each version's fixture as it is reached;
//  2. migrate up: every row of every table and column that existed must
//     still be there with the same values (new rows, such as seeds, are fine);
//  3. fill this version's fixture, and require every table to hold rows;
//  4. migrate down: the tables and columns of version-1 must be back, every
//     row they can hold must still be there, and whatever is lost (rows of
//     tables, or values of columns, that version-1 does not have) must be
//     announced by the down file's "down loses data: yes" header, and
//     nothing may be lost when it says "no";
//  5. migrate up again, keeping everything once more.
//
// It returns an error rather than failing the test, so that a test can show
// that it catches a migration that destroys data.
func checkUpgrade(ctx context.Context, pool *pgxpool.Pool, m *migrations.Migrator, list []migrations.Migration, fixtures map[uint]upgradeFixture, version uint) error {
	if version < 1 || version > uint(len(list)) {
		return fmt.Errorf("no migration %d", version)
	}
	for v := uint(1); v <= version; v++ {
		if _, ok := fixtures[v]; !ok {
			return fmt.Errorf("migration %04d_%s has no upgrade fixture", v, list[v-1].Name)
		}
	}
	mig := list[version-1]
	for v := uint(1); v < version; v++ {
		if _, err := m.To(ctx, v); err != nil {
			return fmt.Errorf("walk up to version %d: %w", v, err)
		}
		if err := fillFixture(ctx, pool, v, fixtures[v]); err != nil {
			return err
		}
	}

	before, err := takeSnapshot(ctx, pool)
	if err != nil {
		return err
	}
	if _, err := m.To(ctx, version); err != nil {
		return fmt.Errorf("%s failed on a database holding data: %w", mig.Up.Path, err)
	}
	after, err := takeSnapshot(ctx, pool)
	if err != nil {
		return err
	}
	if gone, changed := compareSnapshots(before, after); len(gone)+len(changed) > 0 {
		return fmt.Errorf("%s destroyed data: %s", mig.Up.Path, strings.Join(append(gone, changed...), "; "))
	}
	if check := fixtures[version].check; check != nil {
		if err := check(ctx, pool); err != nil {
			return fmt.Errorf("%s: fixture check: %w", mig.Up.Path, err)
		}
	}

	if err := fillFixture(ctx, pool, version, fixtures[version]); err != nil {
		return err
	}
	full, err := takeSnapshot(ctx, pool)
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(full)) {
		if len(full[name].rows) == 0 {
			return fmt.Errorf("table %s is empty at version %d: the upgrade fixtures must fill every table", name, version)
		}
	}

	if _, err := m.To(ctx, version-1); err != nil {
		return fmt.Errorf("%s failed on a database holding data: %w", mig.Down.Path, err)
	}
	down, err := takeSnapshot(ctx, pool)
	if err != nil {
		return err
	}
	if err := sameShape(before, down); err != nil {
		return fmt.Errorf("%s did not bring back version %d's tables: %w", mig.Down.Path, version-1, err)
	}
	gone, changed := compareSnapshots(full, down)
	if len(changed) > 0 {
		return fmt.Errorf("%s destroyed data that version %d can hold: %s", mig.Down.Path, version-1, strings.Join(changed, "; "))
	}
	saysLoses := strings.HasPrefix(strings.ToLower(mig.Down.Header["down loses data"]), "yes")
	switch {
	case len(gone) > 0 && !saysLoses:
		return fmt.Errorf("%s loses data but its header says %q: %s", mig.Down.Path, "down loses data: "+mig.Down.Header["down loses data"], strings.Join(gone, "; "))
	case len(gone) == 0 && saysLoses:
		return fmt.Errorf("%s says it loses data, but the fixture wrote nothing that it loses: fill what version %d adds, or correct the header", mig.Down.Path, version)
	}

	if _, err := m.To(ctx, version); err != nil {
		return fmt.Errorf("%s failed again after a rollback: %w", mig.Up.Path, err)
	}
	again, err := takeSnapshot(ctx, pool)
	if err != nil {
		return err
	}
	if gone, changed := compareSnapshots(down, again); len(gone)+len(changed) > 0 {
		return fmt.Errorf("%s, run again after a rollback, destroyed data: %s", mig.Up.Path, strings.Join(append(gone, changed...), "; "))
	}
	return nil
}

func fillFixture(ctx context.Context, pool *pgxpool.Pool, version uint, fx upgradeFixture) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, fx.fill)
		return err
	})
	if err != nil {
		return fmt.Errorf("fill the fixture of version %d: %w", version, err)
	}
	return nil
}

// snapshot is every meterbase table's columns and rows; each row is a JSON
// object (jsonb's text, so values are exact) of its column values.
type snapshot map[string]*tableData

type tableData struct {
	columns []string
	rows    []map[string]json.RawMessage
}

func takeSnapshot(ctx context.Context, pool *pgxpool.Pool) (snapshot, error) {
	rows, err := pool.Query(ctx, `
		SELECT c.relname::text, array_agg(a.attname::text ORDER BY a.attname)
		  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		 WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND c.relname <> $1
		 GROUP BY 1`, migrations.DefaultTable)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	snap := snapshot{}
	var name string
	var columns []string
	if _, err := pgx.ForEachRow(rows, []any{&name, &columns}, func() error {
		snap[name] = &tableData{columns: columns}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	for name, table := range snap {
		rows, err := pool.Query(ctx, `SELECT to_jsonb(t)::text FROM `+pgx.Identifier{name}.Sanitize()+` t`)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", name, err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", name, err)
		}
		for _, text := range texts {
			var row map[string]json.RawMessage
			if err := json.Unmarshal([]byte(text), &row); err != nil {
				return nil, fmt.Errorf("snapshot %s: %w", name, err)
			}
			table.rows = append(table.rows, row)
		}
	}
	return snap, nil
}

// compareSnapshots says what of from is missing in to: gone lists tables
// and columns that no longer exist, with rows or values in from; changed
// lists rows of the remaining tables that to no longer has, compared on the
// columns both have. Rows that only to has are fine.
func compareSnapshots(from, to snapshot) (gone, changed []string) {
	for _, name := range slices.Sorted(maps.Keys(from)) {
		f := from[name]
		if len(f.rows) == 0 {
			continue
		}
		t, ok := to[name]
		if !ok {
			gone = append(gone, fmt.Sprintf("table %s and its %d row(s)", name, len(f.rows)))
			continue
		}
		var common []string
		for _, col := range f.columns {
			if !slices.Contains(t.columns, col) {
				if filled := countFilled(f.rows, col); filled > 0 {
					gone = append(gone, fmt.Sprintf("column %s.%s and its %d value(s)", name, col, filled))
				}
				continue
			}
			common = append(common, col)
		}
		have := map[string]int{}
		for _, row := range t.rows {
			have[project(row, common)]++
		}
		var missing []string
		for _, row := range f.rows {
			key := project(row, common)
			if have[key] > 0 {
				have[key]--
				continue
			}
			missing = append(missing, key)
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			changed = append(changed, fmt.Sprintf("%d of %d row(s) of %s missing or changed, e.g. %s", len(missing), len(f.rows), name, missing[0]))
		}
	}
	return gone, changed
}

// sameShape requires want's tables and columns in got, and no others.
func sameShape(want, got snapshot) error {
	var diffs []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		switch g, ok := got[name]; {
		case !ok:
			diffs = append(diffs, "table "+name+" is missing")
		case !slices.Equal(want[name].columns, g.columns):
			diffs = append(diffs, fmt.Sprintf("table %s has columns %v, want %v", name, g.columns, want[name].columns))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[name]; !ok {
			diffs = append(diffs, "table "+name+" is left over")
		}
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

func countFilled(rows []map[string]json.RawMessage, col string) int {
	n := 0
	for _, row := range rows {
		if v, ok := row[col]; ok && string(v) != "null" {
			n++
		}
	}
	return n
}

// project renders row's values for columns as canonical JSON.
func project(row map[string]json.RawMessage, columns []string) string {
	out := make(map[string]json.RawMessage, len(columns))
	for _, col := range columns {
		out[col] = row[col]
	}
	b, err := json.Marshal(out) // sorted keys, compacted values
	if err != nil {
		panic(err) // the values came from json.Unmarshal
	}
	return string(b)
}

// The upgrade check must catch a migration that destroys data, not just pass
// the real ones: here it runs over migration sets whose second migration is
// broken on purpose, and over a sound one to show it passes what is right.
func TestUpgradeCheckCatchesDataLoss(t *testing.T) {
	t.Parallel()
	const (
		addNote     = "ALTER TABLE things ADD COLUMN note text;"
		dropNote    = "ALTER TABLE things DROP COLUMN note;"
		losesNotes  = "-- down loses data: yes; every note is lost.\n"
		losesNone   = "-- down loses data: no.\n"
		createTable = "CREATE TABLE things (id bigint PRIMARY KEY, name text NOT NULL);"
	)
	fixtures := map[uint]upgradeFixture{
		1: {fill: `INSERT INTO things (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c');`},
		2: {fill: `UPDATE things SET note = 'kept' WHERE id = 1; INSERT INTO things (id, name, note) VALUES (4, 'd', 'new');`},
	}
	db := pgtest.NewEmptyDB(t)
	for _, tc := range []struct {
		name     string
		up, down string
		fixtures map[uint]upgradeFixture
		wantErr  string // "" for the sound set
	}{
		{name: "sound", up: addNote, down: losesNotes + dropNote},
		{name: "up deletes rows", up: addNote + "DELETE FROM things WHERE id = 2;", down: losesNotes + dropNote,
			wantErr: "0002_b.up.sql destroyed data: 1 of 3 row(s) of things missing or changed"},
		{name: "up rewrites values", up: addNote + "UPDATE things SET name = upper(name);", down: losesNotes + dropNote,
			wantErr: "0002_b.up.sql destroyed data: 3 of 3 row(s) of things missing or changed"},
		{name: "up drops a column and adds it back", up: addNote + "ALTER TABLE things DROP COLUMN name; ALTER TABLE things ADD COLUMN name text NOT NULL DEFAULT '';",
			down: losesNotes + dropNote, wantErr: "0002_b.up.sql destroyed data"},
		{name: "up drops a table", up: "DROP TABLE things; CREATE TABLE others (id bigint);", down: losesNone + "DROP TABLE others;" + createTable,
			wantErr: "0002_b.up.sql destroyed data: table things and its 3 row(s)"},
		{name: "up fails on existing data", up: addNote + "ALTER TABLE things ADD CONSTRAINT things_name_check CHECK (name <> 'b');", down: losesNotes + dropNote,
			wantErr: "0002_b.up.sql failed on a database holding data"},
		{name: "down recreates the table empty", up: addNote, down: losesNotes + "DROP TABLE things;" + createTable,
			wantErr: "0002_b.down.sql destroyed data that version 1 can hold: 4 of 4 row(s) of things"},
		{name: "down hides what it loses", up: addNote, down: losesNone + dropNote,
			wantErr: `0002_b.down.sql loses data but its header says "down loses data: no."`},
		{name: "down claims a loss the fixture does not show", up: addNote, down: losesNotes + dropNote,
			fixtures: map[uint]upgradeFixture{1: fixtures[1], 2: {fill: `SELECT 1;`}},
			wantErr:  "0002_b.down.sql says it loses data, but the fixture wrote nothing that it loses"},
		{name: "no fixture", up: addNote, down: losesNotes + dropNote, fixtures: map[uint]upgradeFixture{1: fixtures[1]},
			wantErr: "migration 0002_b has no upgrade fixture"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
			fsys := fstest.MapFS{
				"0001_a.up.sql":   file(createTable),
				"0001_a.down.sql": file("-- down loses data: yes; every thing is lost.\nDROP TABLE things;"),
				"0002_b.up.sql":   file(tc.up),
				"0002_b.down.sql": file(tc.down),
			}
			list, err := migrations.Load(fsys)
			require.NoError(t, err)
			fx := fixtures
			if tc.fixtures != nil {
				fx = tc.fixtures
			}
			pool := newSchema(t, db)
			m := migrations.NewWithFS(t, pool, nil, fsys)
			err = checkUpgrade(context.Background(), pool, m, list, fx, 2)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
			t.Logf("caught: %v", err)
		})
	}
}
