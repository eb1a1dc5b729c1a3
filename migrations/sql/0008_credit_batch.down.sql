-- changes: drops meterbase_credit_batch and the type meterbase_credit_outcome.
-- locks: none on existing tables; dropping a function and a type takes catalog locks only.
-- rewrites: none.
-- scans: none.
-- large-table cost: constant.
-- down loses data: no; nothing is stored in either.
-- rollback: the up migration creates them again.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP FUNCTION meterbase_credit_batch(uuid, uuid, text[], uuid[], bigint[], bigint[], text[], text[], bytea[], timestamptz);
DROP TYPE meterbase_credit_outcome;
