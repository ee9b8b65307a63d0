-- When a producer last had codes issued: a producer counts as traced while this is within the last
-- 12 months, so coverage is one indexed pass over a region's producers, with no join to batches.
ALTER TABLE producers ADD COLUMN last_issued_at timestamptz;
UPDATE producers p SET last_issued_at = (SELECT max(b.created_at) FROM batches b WHERE b.producer_id = p.id);
CREATE INDEX producers_region_kind_idx ON producers (region_code, kind) INCLUDE (last_issued_at);

-- GS1 Digital Link: /01/{gtin}/10/{lot} finds the product by GTIN, then its batch by lot.
CREATE INDEX batches_product_lot_idx ON batches (product_id, lot, created_at);
