"""Usage events, prices, the SQL ledger and its reports: what every request cost, and to whom."""
