-- Resolved documents kept in Postgres: the tier behind Redis, so that a resolve that reaches Postgres (Redis
-- down, evicted or restarted) reads one row instead of building the document from seven tables.
--
-- `code_documents` holds the JSON document of a code as the service serves it (without the scan statistics,
-- which are read live beside it), written by the service when it builds one. It is a cache: UNLOGGED (no WAL
-- on the read path; emptied after a crash, refilled on demand), and never the only copy of anything.
--
-- Exactness: every write that changes what a batch's documents show raises the batch's version in
-- `document_versions`, in the same transaction, by the triggers below. A document row records the version it
-- was built from (read in the same snapshot as its data) and is served only while that is still the batch's
-- version. A document built from data that changed while it was being built is therefore never served, whatever
-- the timing and the isolation level; no row needs deleting for that, and a stale row is replaced at its
-- next build. A row also stops being served at `valid_until` (the document's TTL: a status turns "expired" at
-- midnight) and when `build` differs (another public URL, or another document format of the service).
--
-- What raises a version (what `resolver.documents.build_document` shows):
--   batches       any column but `admitted` (which gate scans raise and no document shows)
--   events        an event of the batch's own chain (entry_id NULL: inspection, labels, recall). A market
--                 entry or trade event belongs to the voucher or circulation code created in the same
--                 transaction, which has no document yet; no existing document shows it (queries'
--                 chain rule), so gate scans raise no version.
--   products, producers, certifications: every batch of the product or producer
--   trace_codes   a deleted code (the service never deletes one)
--   regions       a changed name: every batch (rare: the region table is reloaded by migrations)

CREATE UNLOGGED TABLE code_documents (
    code        text        PRIMARY KEY,
    batch_id    bigint      NOT NULL,
    version     bigint      NOT NULL,
    build       text        NOT NULL,
    valid_until timestamptz NOT NULL,
    body        bytea       NOT NULL
);
CREATE INDEX code_documents_valid_until_idx ON code_documents (valid_until);

-- A batch without a row is at version 0.
CREATE TABLE document_versions (
    batch_id bigint PRIMARY KEY,
    version  bigint NOT NULL
);

CREATE FUNCTION tracecode_documents_changed(p_batch_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO document_versions AS v (batch_id, version)
    SELECT DISTINCT id, 1 FROM unnest(p_batch_ids) AS u(id) WHERE id IS NOT NULL
    ON CONFLICT (batch_id) DO UPDATE SET version = v.version + 1
$$;

-- A row trigger of a table whose rows name a batch in the column TG_ARGV[0] (OLD is NULL on INSERT, NEW on DELETE).
CREATE FUNCTION tracecode_row_documents_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tracecode_documents_changed(
        ARRAY[(to_jsonb(OLD) ->> TG_ARGV[0])::bigint, (to_jsonb(NEW) ->> TG_ARGV[0])::bigint]);
    RETURN NULL;
END $$;

-- UPDATE OF: the trigger fires when the statement sets one of these columns (a gate scan sets only admitted).
CREATE TRIGGER batches_documents_changed
    AFTER UPDATE OF producer_id, product_id, trace_code, long_code, lot, quantity, unit, produced_on, expires_on,
                    origin, inspection, certificate, status, recall_reason, recalled_at, created_at
    ON batches FOR EACH ROW EXECUTE FUNCTION tracecode_row_documents_changed('id');
CREATE TRIGGER batches_documents_deleted
    AFTER DELETE ON batches FOR EACH ROW EXECUTE FUNCTION tracecode_row_documents_changed('id');

CREATE TRIGGER events_documents_added
    AFTER INSERT ON events FOR EACH ROW WHEN (NEW.entry_id IS NULL)
    EXECUTE FUNCTION tracecode_row_documents_changed('batch_id');
CREATE TRIGGER events_documents_changed
    AFTER UPDATE OR DELETE ON events FOR EACH ROW EXECUTE FUNCTION tracecode_row_documents_changed('batch_id');

-- A code is never deleted by the service; if one is, its document goes with it.
CREATE TRIGGER trace_codes_documents_deleted
    AFTER DELETE ON trace_codes FOR EACH ROW EXECUTE FUNCTION tracecode_row_documents_changed('batch_id');

CREATE FUNCTION tracecode_producer_documents_changed(p_producer_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    SELECT tracecode_documents_changed(ARRAY(SELECT b.id FROM batches b WHERE b.producer_id = ANY (p_producer_ids)))
$$;

CREATE FUNCTION tracecode_registry_documents_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'products' THEN
        PERFORM tracecode_documents_changed(ARRAY(SELECT b.id FROM batches b WHERE b.product_id = OLD.id));
    ELSE
        PERFORM tracecode_producer_documents_changed(ARRAY[OLD.id]);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER products_documents_changed
    AFTER UPDATE ON products FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION tracecode_registry_documents_changed();
CREATE TRIGGER producers_documents_changed
    AFTER UPDATE ON producers FOR EACH ROW
    WHEN ((OLD.credit_code, OLD.name, OLD.kind, OLD.region_code, OLD.contact)
          IS DISTINCT FROM (NEW.credit_code, NEW.name, NEW.kind, NEW.region_code, NEW.contact))
    EXECUTE FUNCTION tracecode_registry_documents_changed();

-- Per statement: an import adds a hundred thousand certifications in one (resolver.imports). A trigger with
-- transition tables takes one event, hence three.
CREATE FUNCTION tracecode_certification_documents_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM tracecode_producer_documents_changed(ARRAY(SELECT DISTINCT n.producer_id FROM new_rows n));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM tracecode_producer_documents_changed(ARRAY(
            SELECT n.producer_id FROM new_rows n UNION SELECT o.producer_id FROM old_rows o));
    ELSE
        PERFORM tracecode_producer_documents_changed(ARRAY(SELECT DISTINCT o.producer_id FROM old_rows o));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER certifications_documents_added
    AFTER INSERT ON certifications REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tracecode_certification_documents_changed();
CREATE TRIGGER certifications_documents_changed
    AFTER UPDATE ON certifications REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tracecode_certification_documents_changed();
CREATE TRIGGER certifications_documents_deleted
    AFTER DELETE ON certifications REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tracecode_certification_documents_changed();

CREATE FUNCTION tracecode_region_documents_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tracecode_documents_changed(ARRAY(SELECT b.id FROM batches b));
    RETURN NULL;
END $$;

CREATE TRIGGER regions_documents_changed
    AFTER UPDATE OF name, prefecture_code, province_code ON regions
    FOR EACH STATEMENT EXECUTE FUNCTION tracecode_region_documents_changed();
