SELECT * FROM meterbase_credit_batch(@workspace_id, @account, @kinds, @holds, @amounts, @ttls_us, @references, @keys, @hashes, @now)
