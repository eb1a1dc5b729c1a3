-- A page of the workspace's accounts, by id, with the member's name.
SELECT a.account_id, a.kind, a.user_id, a.credit_limit, a.created_at, a.updated_at,
       coalesce(u.email, ''), coalesce(u.display_name, '')
  FROM {credit_accounts} a
  LEFT JOIN {users} u ON u.user_id = a.user_id
 WHERE a.account_id > @after
 ORDER BY a.account_id
 LIMIT @limit OFFSET @offset
