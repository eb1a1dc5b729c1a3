SELECT count(*) FROM {credit_accounts} a
