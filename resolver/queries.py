"""The SQL of tracecode, parameterised, one constant per statement."""

from __future__ import annotations

# The resolved document of one code in one round trip: the code row (or the batch for the
# national long form), the batch with its product, producer and region names, the chain of
# events in time order and the certifications that cover the product. Package codes have no row:
# their document is their batch code's (resolver.scan.ranges).
_DOCUMENT_COLUMNS = """
    b.id AS batch_id, b.trace_code, b.long_code, b.lot, b.quantity, b.unit, b.produced_on, b.expires_on,
    b.origin, b.inspection, b.certificate, b.status, b.recall_reason, b.recalled_at, b.created_at,
    pd.name AS product_name, pd.category, pd.gtin,
    p.name AS producer_name, p.credit_code, p.kind AS producer_kind, p.contact, p.region_code,
    county.name AS county_name, prefecture.name AS prefecture_name, province.name AS province_name,
    -- read in the statement's snapshot with the rest: the version this document is built from (0007_documents)
    coalesce((SELECT v.version FROM document_versions v WHERE v.batch_id = b.id), 0) AS document_version,
    (SELECT coalesce(jsonb_agg(
                jsonb_build_object('kind', e.kind, 'at', e.event_time, 'biz_step', e.biz_step,
                                   'disposition', e.disposition) || e.data
                ORDER BY e.event_time, e.id), '[]'::jsonb)
       FROM events e
      WHERE e.batch_id = b.id
        -- Events are partitioned by month of recorded_at, which is the now() of the transaction that wrote them:
        -- never before the batch was registered (the day of margin covers the service's clock against the
        -- database's) nor after this statement. Run-time pruning then skips every other month's partition.
        AND e.recorded_at >= b.created_at - interval '1 day' AND e.recorded_at < now() + interval '1 day'
        -- Every code shows the batch's own events (inspection, labels, recall). A voucher adds its market
        -- entry, a circulation code its entry and its trade: the branch that reached its holder. Package and
        -- batch codes show no branch, so a gate entry or a trade changes no document that already exists
        -- (no cache to drop per scan) and a busy batch's chain does not grow with every lot it sells.
        AND (e.entry_id IS NULL
             OR (e.entry_id = {entry} AND (e.trade_id IS NULL OR e.trade_id = {trade})))) AS chain,
    (SELECT coalesce(jsonb_agg(
                jsonb_build_object('kind', c.kind, 'number', c.number, 'valid_from', c.valid_from,
                                   'valid_until', c.valid_to)
                ORDER BY c.kind, c.number), '[]'::jsonb)
       FROM certifications c
      WHERE c.producer_id = p.id AND (c.product_id IS NULL OR c.product_id = pd.id)
        -- a suspended or revoked certification is no certification to a consumer (0011_certification_status)
        AND c.status = 'valid') AS certifications
"""
_DOCUMENT_JOINS = """
    JOIN products pd ON pd.id = b.product_id
    JOIN producers p ON p.id = b.producer_id
    JOIN regions county ON county.code = p.region_code
    LEFT JOIN regions prefecture ON prefecture.code = county.prefecture_code
    JOIN regions province ON province.code = county.province_code
"""

DOCUMENT_BY_CODE = f"""
SELECT {_DOCUMENT_COLUMNS.format(entry="tc.entry_id", trade="tc.trade_id")}
  FROM trace_codes tc
  JOIN batches b ON b.id = tc.batch_id
  {_DOCUMENT_JOINS}
 WHERE tc.code = $1
"""

DOCUMENT_BY_LONG_CODE = f"""
SELECT {_DOCUMENT_COLUMNS.format(entry="NULL::bigint", trade="NULL::bigint")}
  FROM batches b
  {_DOCUMENT_JOINS}
 WHERE b.long_code = $1
"""

# Documents kept in Postgres (schema/migrations/0007_documents.sql): each asked code's stored document, if it is
# still current (its batch's version, not past valid_until, the same build).
# LATERAL: index probes per code, whatever the generic plan guesses of the array's length.
STORED_DOCUMENTS = """
SELECT u.code, d.batch_id, d.version, d.valid_until, d.body
  FROM unnest($1::text[]) AS u(code)
  JOIN LATERAL (SELECT d.batch_id, d.version, d.valid_until, d.body FROM code_documents d
                 WHERE d.code = u.code AND d.build = $2 AND d.valid_until > now()) d ON true
 WHERE d.version = coalesce((SELECT v.version FROM document_versions v WHERE v.batch_id = d.batch_id), 0)
"""

# A newer version wins a race between two builders; a row of an older version is simply never served.
STORE_DOCUMENTS = """
INSERT INTO code_documents AS d (code, batch_id, version, build, valid_until, body)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::timestamptz[], $6::bytea[])
ON CONFLICT (code) DO UPDATE SET batch_id = excluded.batch_id, version = excluded.version, build = excluded.build,
    valid_until = excluded.valid_until, body = excluded.body
 WHERE d.version <= excluded.version
"""

FORGET_EXPIRED_DOCUMENTS = "DELETE FROM code_documents WHERE valid_until < now()"

# The batches whose documents changed in transactions from $1 on (schema/migrations/0010_version_changes.sql),
# each with the next poll's watermark: the oldest transaction still running now (one row with no batch when nothing
# changed). A worker's first poll reads the changes of the last $1 seconds instead (no cached copy is older).
# Marked as background work: the tests' query logs leave it out.
_CHANGES = """/* tracecode: background */
SELECT h.horizon, v.batch_id, v.version
  FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon) h
  LEFT JOIN document_versions v ON {}
"""
CHANGES_FROM = _CHANGES.format("v.changed_xid >= $1")
CHANGES_WITHIN = _CHANGES.format("v.changed_at > now() - make_interval(secs => $1)")

RESERVE_SEQUENCE = """
INSERT INTO code_sequences AS s (code_type, region_code, next_seq) VALUES ($1, $2, $3)
ON CONFLICT (code_type, region_code) DO UPDATE SET next_seq = s.next_seq + $3
RETURNING next_seq - $3
"""

TOKEN_BY_HASH = "SELECT id, role, scope FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL"

INSERT_TOKEN = "INSERT INTO tokens (token_hash, role, scope) VALUES ($1, $2, $3) RETURNING id"

REGION = "SELECT code, name, level, prefecture_code, province_code FROM regions WHERE code = $1"

INSERT_PRODUCER = """
INSERT INTO producers (credit_code, name, kind, region_code, contact, tags) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (credit_code) DO NOTHING
RETURNING id, credit_code, name, kind, region_code, contact, tags, created_at
"""

PRODUCER_BY_CREDIT_CODE = "SELECT id, credit_code, name, kind, region_code FROM producers WHERE credit_code = $1"

UPSERT_PRODUCT = """
INSERT INTO products AS pd (producer_id, name, category, gtin) VALUES ($1, $2, $3, $4)
ON CONFLICT (producer_id, name, category) DO UPDATE SET gtin = coalesce(excluded.gtin, pd.gtin)
RETURNING id
"""

NEXT_BATCH_NUMBER = """
UPDATE producers SET batch_count = batch_count + 1, last_issued_at = now() WHERE id = $1 RETURNING batch_count
"""

PRODUCER_ISSUED = "UPDATE producers SET last_issued_at = now() WHERE id = $1"

INSERT_BATCH = """
INSERT INTO batches (producer_id, product_id, trace_code, long_code, lot, quantity, unit, produced_on, expires_on,
                     origin, inspection, certificate, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
RETURNING id
"""

INSERT_CODE = "INSERT INTO trace_codes (code, code_type, batch_id, created_at) VALUES ($1, $2, $3, $4)"

INSERT_EVENT = """
INSERT INTO events (event_time, batch_id, kind, epcis_type, biz_step, disposition, data)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

DEMO_BATCH_BY_LOT = "SELECT trace_code, long_code FROM batches WHERE producer_id = $1 AND lot = $2"

DEMO_CERTIFICATION = """
INSERT INTO certifications (kind, number, producer_id, valid_from, valid_to) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (kind, number) DO NOTHING
"""

# Scans counted by one worker since its last sync, added to the totals (resolver.scan.scans: every scan is written here
# once, by the worker that counted it, before Redis sees it).
ADD_SCAN_COUNTS = """
INSERT INTO scan_counts AS s (code, count, first_at)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[])
ON CONFLICT (code) DO UPDATE SET count = s.count + excluded.count,
    first_at = least(s.first_at, excluded.first_at), updated_at = now()
"""

# The arrays come as text (PostgreSQL's array literals, resolver.scan.scans): asyncpg encodes an array parameter element
# by element in Python, which cost the write of a package code's scans as much as its scan.
ADD_PACKAGE_SCANS = """
INSERT INTO package_scans AS s (region_code, seq, count, first_at)
SELECT * FROM unnest($1::text::text[], $2::text::bigint[], $3::text::bigint[], $4::text::timestamptz[])
ON CONFLICT (region_code, seq) DO UPDATE SET count = s.count + excluded.count,
    first_at = least(s.first_at, excluded.first_at), updated_at = now()
"""

# Scan counts of codes from Postgres, when Redis has none to give (resolver.scan.scans): of codes other than package
# codes; of package codes by (region, sequence number); and of whole blocks of package codes ($3 numbers from each
# first number), to make a lost scan hash of Redis whole again. LATERAL: an index range scan per block.
CODE_SCANS = "SELECT code, count, first_at FROM scan_counts WHERE code = ANY ($1::text[])"
PACKAGE_SCANS = """
SELECT s.region_code::text AS region, s.seq, s.count, s.first_at
  FROM unnest($1::text[], $2::bigint[]) AS u(region, seq)
  JOIN package_scans s ON s.region_code = u.region::char(6) AND s.seq = u.seq
"""
PACKAGE_SCAN_BLOCKS = """
SELECT s.region_code::text AS region, s.seq, s.count, s.first_at
  FROM unnest($1::text[], $2::bigint[]) AS u(region, first_seq)
  JOIN LATERAL (SELECT x.region_code, x.seq, x.count, x.first_at FROM package_scans x
                 WHERE x.region_code = u.region::char(6)
                   AND x.seq >= u.first_seq AND x.seq < u.first_seq + $3) s ON true
"""

# The ranges holding package codes' sequence numbers (schema/migrations/0009_code_ranges.sql); `ord` is the
# 1-based position in the arrays, of the codes in an issued range only.
PACKAGE_RANGES = """
SELECT u.ord, r.first_seq, r.count, r.batch_code
  FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS u(region, seq, ord)
  CROSS JOIN LATERAL tracecode_package_range(u.region, u.seq) r
"""

INSERT_RANGE = """
INSERT INTO code_ranges (code_type, region_code, first_seq, count, batch_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)
"""

INSERT_MARKET = "INSERT INTO markets (name, region_code, admitted_categories) VALUES ($1, $2, $3) RETURNING id"

MARKET_REGION = "SELECT region_code FROM markets WHERE id = $1"

MARKET_EXISTS = "SELECT EXISTS (SELECT FROM markets WHERE id = $1)"

ENTRY_REGION = """
SELECT m.region_code FROM gate_entries e JOIN markets m ON m.id = e.market_id WHERE e.voucher_code = $1
"""

# A group of gate scans, one array element per scan (see schema/migrations/0006); rows carry `ord`, the scan's
# 1-based position in the arrays.
GATE_SCANS = "SELECT * FROM tracecode_gate_scans($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"

TRADE = "SELECT * FROM tracecode_trade($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"

_BATCH_SCOPE = (
    "SELECT b.id, b.trace_code, b.status, b.recall_reason, b.recalled_at, p.region_code, p.credit_code, b.certificate"
)
BATCH_BY_TRACE_CODE = f"{_BATCH_SCOPE} FROM batches b JOIN producers p ON p.id = b.producer_id WHERE b.trace_code = $1"
BATCH_BY_LONG_CODE = f"{_BATCH_SCOPE} FROM batches b JOIN producers p ON p.id = b.producer_id WHERE b.long_code = $1"

RECALL_BATCH = """
UPDATE batches SET status = 'recalled', recall_reason = $2, recalled_at = now()
 WHERE id = $1 AND status = 'active'
RETURNING recalled_at
"""

# An inspection result $2 (a jsonb object) added to batch $1 becomes the batch's result in force (batches.inspection:
# what gates reject on and documents show) unless that is a worse or newer one: a failed result outranks a passing
# one, then the later inspected_on, then the later added. So one failed result fails the batch for good, and a pass
# never clears it. The update takes the batch's row lock, which every gate scan group takes before it decides: no
# scan that reads after the commit admits a failed batch. Run after LOCK_BATCH in one transaction, so that the
# result in force it returns when this one is not is the latest. Returns the result in force.
LOCK_BATCH = "SELECT FROM batches WHERE id = $1 FOR UPDATE"
ADD_INSPECTION = """
WITH added AS (
    UPDATE batches b SET inspection = $2::jsonb
     WHERE b.id = $1
       AND (b.inspection IS NULL
            OR (($2::jsonb ->> 'result') = 'fail', ($2::jsonb ->> 'inspected_on')::date)
               >= ((b.inspection ->> 'result') = 'fail', (b.inspection ->> 'inspected_on')::date))
    RETURNING b.inspection
)
SELECT coalesce((SELECT inspection FROM added), (SELECT inspection FROM batches WHERE id = $1)) AS inspection,
       EXISTS (SELECT FROM added) AS is_in_force
"""

# The markets that still hold some of batch $1 (entered and not yet traded out), with how much: a recall's answer.
MARKETS_HOLDING = """
SELECT m.id AS market_id, m.name, sum(e.quantity - e.traded) AS quantity_left, e.unit
  FROM gate_entries e JOIN markets m ON m.id = e.market_id
 WHERE e.batch_id = $1 AND e.traded < e.quantity
 GROUP BY m.id, m.name, e.unit
 ORDER BY m.id
"""

REVOKE_TOKEN = "UPDATE tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id"

# GS1 Digital Link (resolver.scan.gs1_index): whether a product carries GTIN $1, with its newest batch; the batch
# registered last with GTIN $1 and lot $2 (should products of several producers share a GTIN, the newest batch
# wins), joining on producer_id as well so that the batches (producer_id, created_at) index serves it; a batch by
# its trace code.
# Each with the batch's document version, which the index holds its entry against.
_BATCH_VERSION = "coalesce((SELECT v.version FROM document_versions v WHERE v.batch_id = b.id), 0) AS version"
GS1_GTIN = f"""
SELECT EXISTS (SELECT 1 FROM products WHERE gtin = $1) AS is_known, b.id AS batch_id, {_BATCH_VERSION}
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL (
        SELECT b.id FROM products pd JOIN batches b ON b.producer_id = pd.producer_id AND b.product_id = pd.id
         WHERE pd.gtin = $1
         ORDER BY b.created_at DESC, b.id DESC
         LIMIT 1) AS b ON true
"""
GS1_LOT_BATCH = f"""
SELECT b.id AS batch_id, b.trace_code, {_BATCH_VERSION}
  FROM products pd
  JOIN batches b ON b.producer_id = pd.producer_id AND b.product_id = pd.id
 WHERE pd.gtin = $1 AND b.lot = $2
 ORDER BY b.created_at DESC, b.id DESC
 LIMIT 1
"""
GS1_BATCH_BY_CODE = f"""
SELECT b.id AS batch_id, pd.gtin, b.lot, {_BATCH_VERSION}
  FROM batches b JOIN products pd ON pd.id = b.product_id
 WHERE b.trace_code = $1
"""

# The products that carry GTIN $1 (the GTIN level of a Digital Link, resolver.scan.gs1), newest first, at most $4:
# each with its producer, the certifications valid on $2 (status valid: neither suspended nor revoked) and its
# latest $3 batches, recalled ones first, each with its status on $2 (as resolver.scan.documents.status_of tells it).
GS1_PRODUCTS = """
SELECT pd.name AS product_name, pd.category, p.name AS producer_name, p.credit_code, p.kind AS producer_kind,
       p.contact, county.name AS county_name, prefecture.name AS prefecture_name, province.name AS province_name,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('kind', c.kind, 'number', c.number, 'valid_until', c.valid_to)
                                  ORDER BY c.kind, c.number), '[]'::jsonb)
          FROM certifications c
         WHERE c.producer_id = p.id AND (c.product_id IS NULL OR c.product_id = pd.id) AND c.status = 'valid'
           AND c.valid_to >= $2
       ) AS certifications,
       (SELECT count(*) FROM batches b WHERE b.product_id = pd.id AND b.status = 'recalled') AS recalled,
       (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.status = 'recalled' DESC, x.created_at DESC), '[]'::jsonb)
          FROM (SELECT b.trace_code, b.lot, b.produced_on,
                       CASE WHEN b.status = 'recalled' THEN 'recalled' WHEN b.expires_on < $2 THEN 'expired'
                            ELSE 'active' END AS status, b.expires_on, b.recall_reason, b.recalled_at,
                       b.created_at
                  FROM batches b
                 WHERE b.product_id = pd.id
                 ORDER BY b.status = 'recalled' DESC, b.created_at DESC
                 LIMIT $3) x
       ) AS batches
  FROM products pd
  JOIN producers p ON p.id = pd.producer_id
  JOIN regions county ON county.code = p.region_code
  LEFT JOIN regions prefecture ON prefecture.code = county.prefecture_code
  JOIN regions province ON province.code = county.province_code
 WHERE pd.gtin = $1
 ORDER BY pd.created_at DESC
 LIMIT $4
"""
