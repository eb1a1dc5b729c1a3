SELECT meterbase_credit_hold(@workspace_id, @account, @amount, @ttl_us, @reference, @key, @request_hash, @now)
