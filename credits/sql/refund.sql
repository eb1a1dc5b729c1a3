SELECT meterbase_credit_refund(@workspace_id, @entry, @amount, @reference, @key, @request_hash, @now)
