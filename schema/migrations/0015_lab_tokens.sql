-- Lab results after registration (resolver.api.inspections): a `lab` token of a region adds inspection results to
-- the batches of its producers. The result itself needs no table: it is an event of the batch's chain, and the
-- result in force is the batch's `inspection` (what gates and documents read), both of which raise the batch's
-- document version (0007_documents).
ALTER TABLE tokens DROP CONSTRAINT tokens_role_check;
ALTER TABLE tokens ADD CONSTRAINT tokens_role_check CHECK (role IN ('admin', 'regulator', 'producer', 'gate', 'lab'));
