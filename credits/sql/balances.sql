-- The balances of the accounts given at @at (NULL: now).
--
-- At or after the account's last write (settled_at), time-driven changes
-- not yet journaled are computed at read time: while nothing is due
-- (before settle_due_at) the stored figures are exact; else, or when the
-- lots are asked for, the lots are read through meterbase_credit_lots.
-- Before the last write, the journal says: the sums of the entries in
-- effect by @at (their effective_at), written early or late.
WITH p AS (SELECT coalesce(@at::timestamptz, now()) AS at)
SELECT a.account_id, a.credit_limit, p.at, p.at < a.settled_at AS past,
       CASE WHEN p.at < a.settled_at THEN coalesce(j.total, 0)
            WHEN x.computed THEN x.lots - greatest(0, a.debt - x.activated)
            ELSE a.balance END AS total,
       CASE WHEN p.at < a.settled_at THEN coalesce(j.held, 0)
            WHEN x.computed THEN x.held
            ELSE a.held END AS held,
       CASE WHEN p.at < a.settled_at THEN coalesce(j.debt, 0)
            WHEN x.computed THEN greatest(0, a.debt - x.activated)
            ELSE a.debt END AS debt,
       CASE WHEN x.computed THEN x.free ELSE a.balance + a.debt - a.held END AS free,
       CASE WHEN x.computed THEN a.scheduled - x.activated ELSE a.scheduled END AS scheduled,
       x.items
  FROM p
 CROSS JOIN {credit_accounts} a
  LEFT JOIN LATERAL (
       SELECT true AS computed,
              coalesce(sum(l.remaining), 0)::bigint AS lots, coalesce(sum(l.held), 0)::bigint AS held,
              coalesce(sum(l.available), 0)::bigint AS free, coalesce(sum(l.activated), 0)::bigint AS activated,
              CASE WHEN @with_lots THEN jsonb_agg(l.view ORDER BY l.burn_rank) FILTER (WHERE l.remaining > 0 OR l.scheduled > 0) END AS items
         FROM meterbase_credit_lots(@workspace_id, a.account_id, NULL, p.at) l
       ) x ON p.at >= a.settled_at AND (@with_lots OR p.at >= a.settle_due_at)
  LEFT JOIN LATERAL (
       SELECT sum(e.amount)::bigint AS total, sum(e.held_delta)::bigint AS held, sum(e.debt_delta)::bigint AS debt
         FROM {credit_entries} e
        WHERE e.account_id = a.account_id AND e.effective_at <= p.at
       ) j ON p.at < a.settled_at
 WHERE a.account_id = ANY(@accounts)
