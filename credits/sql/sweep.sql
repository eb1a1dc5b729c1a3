SELECT meterbase_credit_sweep(@workspace_id, @account, @limit, @now)
