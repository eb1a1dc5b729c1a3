SELECT meterbase_credit_void(@workspace_id, @grant, @key, @request_hash, @now)
