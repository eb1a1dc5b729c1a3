// Package tenancy is meterbase's tenant boundary, and the house every other
// meterbase package is built on: typed ids, the Tenant handle through which
// every tenant row is reached, its statement builders and prepared
// hand-written SQL, one Page and List for every list, the shared errors,
// and the repositories of users, workspaces and memberships.
//
// # The contract
//
//   - A Tenant (NewTenant) is a workspace's handle over the host's
//     connection (a *pgxpool.Pool, a *pgx.Conn or a pgx.Tx; with a pgx.Tx
//     every call joins the host's transaction). Every statement it sends is
//     restricted to its workspace: the builders write workspace_id = $1
//     first and wrap every caller predicate in parentheses; prepared SQL
//     names tenant tables as {table}, which the handle expands into
//     tenant-filtered references. Row-level security, keyed on
//     transaction-local settings the handle sends with each statement,
//     stands behind both.
//   - Repositories are services made once with a *Config and shared; their
//     methods take ctx, the Tenant they act for, and a params struct, and
//     return a result struct and a typed error: members.Add(ctx, acme,
//     tenancy.AddMemberParams{...}). The credits, usage and features
//     packages have the same shape.
//   - Errors are sentinels and typed errors, checked with errors.Is and
//     errors.As: ErrNotFound, ErrInvalidInput (*InvalidInputError,
//     *InvalidIDError, *CursorError), ErrUnsafeSQL, ErrNotMember,
//     ErrLastOwner, ErrForbidden (*ForbiddenError), and the translated
//     Postgres failures (ErrUniqueViolation... with a *ConstraintError,
//     ErrRetryable, ErrLockTimeout). Bad input fails before any SQL is
//     sent; nothing is half-written.
//   - Results marshal to JSON the way a client cache expects: camelCase
//     names, ids as strings, RFC 3339 times; lists carry their cursor.
//   - The Operator (NewOperator, with a reason) is the one cross-tenant
//     reader.
//
// # What the guards do not see
//
// Fragments and prepared SQL are code the host's programmers write, never
// user input; their checks are a guard against mistakes, not a sandbox. A
// function of the host's own can do anything. A caller predicate that can
// fail on some rows (a cast, a division) may be evaluated by Postgres on
// other tenants' rows before the tenant's predicate rules them out (the
// planner orders quals by cost, and leakproof operators run ahead of
// row-level security policies), so whether such a query fails can depend
// on another tenant's data: an error oracle of one bit, never a row. Keep
// predicates total (compare, do not cast), or guard the risky part with
// CASE.
package tenancy
