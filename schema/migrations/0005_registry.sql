-- The registry's reads: the recent recalls of a region (its public page) walk only the recalled
-- batches, newest first; the certifications of a product are found without a scan (unlisted
-- certifications, and deleting a product checks them).
CREATE INDEX batches_recalled_idx ON batches (recalled_at DESC) WHERE status = 'recalled';
CREATE INDEX certifications_product_idx ON certifications (product_id) WHERE product_id IS NOT NULL;
