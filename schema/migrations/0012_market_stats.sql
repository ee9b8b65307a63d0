-- A market's figures for a period (resolver.api.flow): its gate scans and its entries by time, one index range
-- scan each instead of every scan the market ever had.
CREATE INDEX gate_scans_market_time_idx ON gate_scans (market_id, scanned_at);
CREATE INDEX gate_entries_market_time_idx ON gate_entries (market_id, scanned_at);
