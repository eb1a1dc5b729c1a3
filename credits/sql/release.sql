SELECT meterbase_credit_release(@workspace_id, @hold, @key, @request_hash, @now)
