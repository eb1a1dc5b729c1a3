-- One lot as it stands at @at (NULL: now), spent or not.
SELECT l.view
  FROM {credit_grants} g
 CROSS JOIN LATERAL meterbase_credit_lots(@workspace_id, g.account_id, g.grant_id, coalesce(@at::timestamptz, now())) l
 WHERE g.grant_id = @grant AND l.grant_id = g.grant_id
