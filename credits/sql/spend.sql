SELECT * FROM meterbase_credit_spend(@workspace_id, @account, @amount, @reference, @key, @request_hash, @now)
