// Package usage is meterbase's usage history: one event per AI operation,
// recorded idempotently at batch speed, listed with filters and pages, and
// summed exactly, in milliseconds, from rollups the database keeps.
package usage
