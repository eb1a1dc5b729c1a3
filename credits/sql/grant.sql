SELECT meterbase_credit_grant(@workspace_id, @account, @amount, @priority, @effective_at, @expires_at,
                              @category, @metadata, @reference, @key, @request_hash, @now)
