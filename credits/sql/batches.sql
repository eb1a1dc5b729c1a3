-- Batches of requests on several accounts, in one statement and one
-- commit: meterbase_credit_batch for each account in turn, in the order
-- given, on the slice [@firsts[i], @lasts[i]] of the request arrays. The
-- Ledger gives the accounts in one total order (their queue locks' keys,
-- then their ids), so two of these statements take the locks they share
-- in the same order and cannot deadlock each other.
-- The lateral call runs once per account, in unnest's order.
SELECT b.err_code, b.err_message, b.err_detail, b.err_constraint, b.err_table, b.entry_id, b.seq, b.debt_delta,
       b.balance_after, b.held_after, b.debt_after, b.reference, b.effective_at, b.recorded_at, b.lot_ids,
       b.lot_amounts, b.lot_categories, b.amount, b.replay, b.result
  FROM unnest(@accounts::uuid[], @firsts::integer[], @lasts::integer[]) WITH ORDINALITY AS a(account, first, last, n)
 CROSS JOIN LATERAL meterbase_credit_batch(@workspace_id, a.account, (@kinds::text[])[a.first:a.last],
                                           (@holds::uuid[])[a.first:a.last], (@amounts::bigint[])[a.first:a.last],
                                           (@ttls_us::bigint[])[a.first:a.last], (@references::text[])[a.first:a.last],
                                           (@keys::text[])[a.first:a.last], (@hashes::bytea[])[a.first:a.last],
                                           @now) WITH ORDINALITY AS b
 ORDER BY a.n, b.ordinality
