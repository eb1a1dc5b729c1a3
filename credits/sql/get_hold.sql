-- One hold as it stands at @at (NULL: now): an active hold past its expiry
-- has expired, whether or not that is journaled yet.
WITH p AS (SELECT coalesce(@at::timestamptz, now()) AS at)
SELECT h.hold_id, h.account_id, h.amount,
       CASE WHEN h.state = 'active' AND h.expires_at <= p.at THEN 'expired' ELSE h.state END,
       coalesce(h.captured, 0), h.reference, h.expires_at,
       CASE WHEN h.state = 'active' AND h.expires_at <= p.at THEN h.expires_at ELSE h.resolved_at END,
       h.created_at,
       (SELECT jsonb_agg(jsonb_build_object('grantId', hl.grant_id, 'amount', hl.amount)
                         ORDER BY g.priority, g.expires_at, g.effective_at, g.grant_id)
          FROM {credit_hold_lots} hl
          JOIN {credit_grants} g ON g.grant_id = hl.grant_id
         WHERE hl.hold_id = h.hold_id)
  FROM p
 CROSS JOIN {credit_holds} h
 WHERE h.hold_id = @hold
