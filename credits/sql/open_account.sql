-- Opens the shared pool (@member NULL) or a member's account, or returns it.
SELECT meterbase_credit_open_account(@workspace_id, @account, @member, @credit_limit, @now)
