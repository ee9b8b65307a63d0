-- When a producer last had codes issued: a producer counts as traced while this is within the last
-- 12 months, so coverage is one indexed pass over a region's producers, with no join to batches.
ALTER TABLE producers ADD COLUMN last_issued_at timestamptz;
UPDATE producers p SET last_issued_at = (SELECT max(b.created_at) FROM batches b WHERE b.producer_id = p.id);
CREATE INDEX producers_region_kind_idx ON producers (region_code, kind) INCLUDE (last_issued_at);
