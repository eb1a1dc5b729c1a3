-- A page of an account's journal, newest first, from the entry before
-- @before. The filters narrow the index scan on (account, seq); they are
-- never the reason an index is left out.
SELECT e.entry_id, e.account_id, e.entry_seq, e.kind, e.amount, e.held_delta, e.debt_delta,
       e.balance_after, e.held_after, e.debt_after, e.grant_id, e.hold_id, e.refunded_entry_id,
       e.reference, e.effective_at, e.recorded_at,
       (SELECT jsonb_agg(jsonb_build_object('grantId', l.grant_id, 'amount', l.amount, 'category', g.category)
                         ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id)
          FROM {credit_entry_lots} l
          JOIN {credit_grants} g ON g.grant_id = l.grant_id
         WHERE l.entry_id = e.entry_id)
  FROM {credit_entries} e
 WHERE e.account_id = @account
   AND e.entry_seq < @before
   AND (cardinality(@kinds::text[]) = 0 OR e.kind = ANY(@kinds::text[]))
   AND (@reference::text = '' OR e.reference = @reference::text)
   AND (@since::timestamptz IS NULL OR e.recorded_at >= @since::timestamptz)
   AND (@until::timestamptz IS NULL OR e.recorded_at < @until::timestamptz)
 ORDER BY e.entry_seq DESC
 LIMIT @limit
