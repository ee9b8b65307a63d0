-- Which batches' documents changed, in commit order: every worker asks Postgres twice a second (resolver.changes),
-- so that a recall or any other change reaches every worker within a second whatever Redis does (down, frozen,
-- partitioned, restarted, a message lost). A cached document carries the version it was built from, and a
-- worker serves no copy older than the version it knows.
--
-- A poll returns the changes of transactions from its watermark on, then moves the watermark to the oldest
-- transaction still running when it read (pg_snapshot_xmin): a change committed later, by a transaction that
-- started before the poll, has a transaction id at or above that, so the next poll sees it. Time stamps could
-- not do that (a transaction's now() is its start, and it may commit after a later one's poll).
ALTER TABLE document_versions ADD COLUMN changed_xid bigint NOT NULL DEFAULT 0;
ALTER TABLE document_versions ADD COLUMN changed_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX document_versions_changed_xid_idx ON document_versions (changed_xid);
CREATE INDEX document_versions_changed_at_idx ON document_versions (changed_at);

CREATE OR REPLACE FUNCTION tracecode_documents_changed(p_batch_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO document_versions AS v (batch_id, version, changed_xid, changed_at)
    SELECT DISTINCT id, 1, pg_current_xact_id()::text::bigint, now() FROM unnest(p_batch_ids) AS u(id)
     WHERE id IS NOT NULL
    ON CONFLICT (batch_id) DO UPDATE
       SET version = v.version + 1, changed_xid = excluded.changed_xid, changed_at = excluded.changed_at
$$;
