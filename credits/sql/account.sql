SELECT a.account_id, a.kind, a.user_id, a.credit_limit, a.created_at, a.updated_at
  FROM {credit_accounts} a
 WHERE a.account_id = @account
