SELECT e.entry_id, e.account_id, e.entry_seq, e.kind, e.amount, e.held_delta, e.debt_delta,
       e.balance_after, e.held_after, e.debt_after, e.grant_id, e.hold_id, e.refunded_entry_id,
       e.reference, e.effective_at, e.recorded_at,
       (SELECT jsonb_agg(jsonb_build_object('grantId', l.grant_id, 'amount', l.amount, 'category', g.category)
                         ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id)
          FROM {credit_entry_lots} l
          JOIN {credit_grants} g ON g.grant_id = l.grant_id
         WHERE l.entry_id = e.entry_id)
  FROM {credit_entries} e
 WHERE e.entry_id = @entry
