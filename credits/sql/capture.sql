SELECT meterbase_credit_capture(@workspace_id, @hold, @amount, @reference, @key, @request_hash, @now)
