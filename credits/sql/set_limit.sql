SELECT meterbase_credit_set_limit(@workspace_id, @account, @credit_limit, @now)
