-- Package codes (type 4) as ranges: a labels request stores one row, not one row per code.
--
-- The codes of a labels request are a pure function of the sequence numbers it reserved (codegen.permute), so
-- `code_ranges` keeps (type, region, first sequence number, count, batch) and a code is found by inverting the
-- permutation (code -> sequence number, which needs the secret, so the service computes it) and looking up the
-- range that holds that number: the last range starting at or below it, if it reaches that far. Ranges come
-- from disjoint reservations of `code_sequences` and are never changed or deleted.
--
-- The `trace_codes` rows of package codes issued before this migration move to ranges in a step of the
-- migration runner that knows the secret (schema.migrate.move_package_codes_to_ranges). Batch, voucher and
-- circulation codes keep their rows.
--
-- The package rows are deleted without raising their batches' document versions (0007's trigger on deleted
-- codes): a package code's document is its batch's, which the move does not change. The service never deletes a
-- code, so the trigger goes.
DROP TRIGGER trace_codes_documents_deleted ON trace_codes;

-- Per-code state exists only for codes that have some: consumer scan counts of package codes, flushed from
-- Redis, live in `package_scans` by (region, sequence number), so that the counts of a block of sequence numbers
-- are one index range scan (the service rebuilds a block's counters in Redis from it; resolver.scans).

CREATE TABLE code_ranges (
    code_type   smallint    NOT NULL CHECK (code_type = 4),
    region_code char(6)     NOT NULL,
    first_seq   bigint      NOT NULL CHECK (first_seq >= 0),
    count       bigint      NOT NULL CHECK (count > 0),
    batch_id    bigint      NOT NULL REFERENCES batches (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code_type, region_code, first_seq),
    CHECK (first_seq + count <= 100000000000)
);
CREATE INDEX code_ranges_batch_idx ON code_ranges (batch_id);

CREATE TABLE package_scans (
    region_code char(6)     NOT NULL,
    seq         bigint      NOT NULL,
    count       bigint      NOT NULL CHECK (count >= 0),
    first_at    timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region_code, seq)
);

-- The range holding a package code's sequence number, with its batch's code; none for a code never issued.
CREATE FUNCTION tracecode_package_range(p_region text, p_seq bigint)
RETURNS TABLE (first_seq bigint, count bigint, batch_id bigint, batch_code text)
LANGUAGE sql STABLE AS $$
    SELECT r.first_seq, r.count, r.batch_id, b.trace_code::text
      FROM (SELECT x.first_seq, x.count, x.batch_id FROM code_ranges x
             WHERE x.code_type = 4 AND x.region_code = p_region::char(6) AND x.first_seq <= p_seq
             ORDER BY x.first_seq DESC LIMIT 1) r
      JOIN batches b ON b.id = r.batch_id
     WHERE p_seq < r.first_seq + r.count
$$;

-- Gate scans find a package code by its range: the caller passes each code's sequence number (NULL for codes of
-- other types, which keep their rows in trace_codes). Otherwise the function of 0006 as it was.
DROP FUNCTION tracecode_gate_scan(bigint, text, text, bytea, text, numeric, text, text, date);
DROP FUNCTION tracecode_gate_scans(bigint[], text[], text[], bytea[], text[], numeric[], text[], text[], date);

CREATE FUNCTION tracecode_gate_scans(
    p_market_ids bigint[], p_gates text[], p_keys text[], p_request_hashes bytea[], p_codes text[],
    p_quantities numeric[], p_units text[], p_voucher_codes text[], p_today date, p_package_seqs bigint[]
) RETURNS TABLE (ord integer, decision text, reasons text[], voucher_code text, batch_id bigint,
                 is_replay boolean, is_conflict boolean)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    s            record;
    v_prev       record;
    v_market     record;
    v_market_id  bigint;    -- the market in v_market
    v_market_name text;     -- NULL until a market is read
    v_types      smallint[];
    v_batches    bigint[];
    v_trades     bigint[];
    v_seen       bigint[];  -- ordinals whose key is already recorded
    -- the group's batches, trades, read once (b_admitted and t_admitted rise as scans are admitted)
    b_ids        bigint[];
    b_status     text[];
    b_expires    date[];
    b_failed     boolean[];
    b_certified  boolean[];
    b_quantity   numeric[];
    b_admitted   numeric[];
    b_unit       text[];
    b_category   text[];
    t_ids        bigint[];
    t_quantity   numeric[];
    t_admitted   numeric[];
    b            integer;   -- index in the b_ arrays
    t            integer;   -- index in the t_ arrays
    v_why        text[];
    v_accept     boolean;
    -- the last new scan decided (a second scan of its key in the group is its replay)
    l_market     bigint;
    l_key        text;
    l_hash       bytea;
    l_accept     boolean;
    l_why        text[];
    l_voucher    text;
    l_batch      bigint;
    -- the new scans, for the writes: ordinal, accepted, reasons (comma-joined), batch
    n_i          integer[] := '{}';
    n_accept     boolean[] := '{}';
    n_why        text[] := '{}';
    n_batch      bigint[] := '{}';
    n_market     text[] := '{}';  -- market name, for the event
    v_written    integer;
BEGIN
    SELECT array_agg(coalesce(tc.code_type, pr.code_type) ORDER BY u.i),
           array_agg(coalesce(tc.batch_id, pr.batch_id) ORDER BY u.i), array_agg(tc.trade_id ORDER BY u.i)
      INTO v_types, v_batches, v_trades
      FROM unnest(p_codes, p_package_seqs) WITH ORDINALITY AS u(code, seq, i)
      -- LATERAL ... LIMIT 1: one index probe of one partition per code, never a hash join over every partition.
      LEFT JOIN LATERAL (SELECT c.code_type, c.batch_id, c.trade_id FROM trace_codes c
                          WHERE u.seq IS NULL AND c.code = u.code::char(20) LIMIT 1) tc ON true
      LEFT JOIN LATERAL (SELECT 4::smallint AS code_type, r.batch_id FROM tracecode_package_range(substr(u.code, 2, 6), u.seq) r
                          WHERE u.seq IS NOT NULL) pr ON true;

    -- (= ANY of an array, not IN a subquery: an index probe per id, never a join over the whole table)
    PERFORM 1 FROM batches x
     WHERE x.id = ANY (ARRAY(SELECT y.batch_id FROM unnest(v_types, v_batches, v_trades) AS y(code_type, batch_id, trade_id)
                              WHERE y.code_type <> 3 AND y.trade_id IS NULL))
     ORDER BY x.id FOR UPDATE;
    PERFORM 1 FROM trades x
     WHERE x.id = ANY (ARRAY(SELECT y.trade_id FROM unnest(v_types, v_trades) AS y(code_type, trade_id)
                              WHERE y.code_type <> 3))
     ORDER BY x.id FOR UPDATE;

    SELECT array_agg(x.id), array_agg(x.status), array_agg(x.expires_on),
           array_agg(coalesce(x.inspection->>'result' = 'fail', false)), array_agg(x.certificate IS NOT NULL),
           array_agg(x.quantity), array_agg(x.admitted), array_agg(x.unit), array_agg(pd.category)
      INTO b_ids, b_status, b_expires, b_failed, b_certified, b_quantity, b_admitted, b_unit, b_category
      FROM batches x JOIN products pd ON pd.id = x.product_id
     WHERE x.id = ANY (ARRAY(SELECT y.batch_id FROM unnest(v_types, v_batches) AS y(code_type, batch_id)
                              WHERE y.code_type <> 3));
    SELECT array_agg(x.id), array_agg(x.quantity), array_agg(x.admitted) INTO t_ids, t_quantity, t_admitted
      FROM trades x
     WHERE x.id = ANY (ARRAY(SELECT y.trade_id FROM unnest(v_types, v_trades) AS y(code_type, trade_id)
                              WHERE y.code_type <> 3));

    SELECT array_agg(k.i) INTO v_seen
      FROM unnest(p_market_ids, p_keys) WITH ORDINALITY AS k(market_id, key, i),
           LATERAL (SELECT FROM gate_scans gs WHERE gs.market_id = k.market_id AND gs.idempotency_key = k.key
                     LIMIT 1) AS found;

    FOR s IN
        SELECT u.*, v_types[u.i] AS code_type, v_batches[u.i] AS code_batch_id, v_trades[u.i] AS trade_id
          FROM unnest(p_market_ids, p_keys, p_request_hashes, p_quantities, p_units)
               WITH ORDINALITY AS u(market_id, key, request_hash, quantity, unit, i)
         ORDER BY u.market_id, u.key, u.i
    LOOP
        ord := s.i;
        IF s.i = ANY (v_seen) THEN
            SELECT gs.decision, gs.reasons, gs.request_hash, e.voucher_code::text AS voucher_code, e.batch_id
              INTO v_prev
              FROM gate_scans gs LEFT JOIN gate_entries e ON e.id = gs.entry_id
             WHERE gs.market_id = s.market_id AND gs.idempotency_key = s.key;
            decision := v_prev.decision; reasons := v_prev.reasons; voucher_code := v_prev.voucher_code;
            batch_id := v_prev.batch_id; is_replay := true; is_conflict := v_prev.request_hash <> s.request_hash;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF s.market_id = l_market AND s.key = l_key THEN  -- the key twice in this group
            decision := CASE WHEN l_accept THEN 'accept' ELSE 'reject' END; reasons := l_why;
            voucher_code := l_voucher; batch_id := l_batch; is_replay := true; is_conflict := l_hash <> s.request_hash;
            RETURN NEXT;
            CONTINUE;
        END IF;

        v_why := '{}';
        b := NULL;
        t := NULL;
        IF s.code_type IS NULL THEN
            v_why := ARRAY['unknown_code'];
        ELSIF s.code_type = 3 THEN
            v_why := ARRAY['voucher_not_admissible'];
        ELSE
            b := array_position(b_ids, s.code_batch_id);
            IF v_market_id IS DISTINCT FROM s.market_id THEN
                SELECT m.name, m.admitted_categories INTO v_market FROM markets m WHERE m.id = s.market_id;
                v_market_id := s.market_id;
                v_market_name := v_market.name;
            END IF;
            IF b_status[b] = 'recalled' THEN v_why := array_append(v_why, 'recalled'); END IF;
            IF b_expires[b] < p_today THEN v_why := array_append(v_why, 'expired'); END IF;
            IF b_failed[b] THEN v_why := array_append(v_why, 'inspection_failed'); END IF;
            IF NOT b_certified[b] THEN v_why := array_append(v_why, 'no_certificate'); END IF;
            IF v_market.admitted_categories IS NOT NULL AND NOT (b_category[b] = ANY (v_market.admitted_categories)) THEN
                v_why := array_append(v_why, 'not_for_this_market');
            END IF;
            IF s.unit <> b_unit[b] THEN v_why := array_append(v_why, 'unit_mismatch'); END IF;
            IF s.trade_id IS NOT NULL THEN
                t := array_position(t_ids, s.trade_id);
                IF t_admitted[t] + s.quantity > t_quantity[t] THEN
                    v_why := array_append(v_why, 'quantity_exceeds_batch');
                ELSIF cardinality(v_why) = 0 THEN
                    t_admitted[t] := t_admitted[t] + s.quantity;
                END IF;
            ELSIF b_admitted[b] + s.quantity > b_quantity[b] THEN
                v_why := array_append(v_why, 'quantity_exceeds_batch');
            ELSIF cardinality(v_why) = 0 THEN
                b_admitted[b] := b_admitted[b] + s.quantity;
            END IF;
        END IF;
        v_accept := cardinality(v_why) = 0;

        n_i := n_i || s.i::integer;
        n_accept := n_accept || v_accept;
        n_why := n_why || array_to_string(v_why, ',');
        n_batch := n_batch || b_ids[b];
        n_market := n_market || v_market_name;
        l_market := s.market_id; l_key := s.key; l_hash := s.request_hash; l_accept := v_accept; l_why := v_why;
        l_voucher := CASE WHEN v_accept THEN p_voucher_codes[s.i] END; l_batch := b_ids[b];

        decision := CASE WHEN v_accept THEN 'accept' ELSE 'reject' END; reasons := v_why; voucher_code := l_voucher;
        batch_id := l_batch; is_replay := false; is_conflict := false;
        RETURN NEXT;
    END LOOP;

    IF b_ids IS NOT NULL THEN
        UPDATE batches x SET admitted = y.admitted
          FROM unnest(b_ids, b_admitted) AS y(id, admitted)
         WHERE x.id = y.id AND x.admitted <> y.admitted;
    END IF;
    IF t_ids IS NOT NULL THEN
        UPDATE trades x SET admitted = y.admitted
          FROM unnest(t_ids, t_admitted) AS y(id, admitted)
         WHERE x.id = y.id AND x.admitted <> y.admitted;
    END IF;

    WITH n AS (
        SELECT y.i, y.accept, string_to_array(y.why, ',') AS why, y.batch_id, y.market_name,
               p_market_ids[y.i] AS market_id, p_gates[y.i] AS gate, p_keys[y.i] AS key,
               p_request_hashes[y.i] AS request_hash, p_codes[y.i] AS code, p_quantities[y.i] AS quantity,
               p_units[y.i] AS unit, p_voucher_codes[y.i] AS voucher_code, v_trades[y.i] AS trade_id
          FROM unnest(n_i, n_accept, n_why, n_batch, n_market) AS y(i, accept, why, batch_id, market_name)
    ), entries AS (
        INSERT INTO gate_entries (market_id, gate, batch_id, trade_id, scanned_code, voucher_code, quantity, unit)
        SELECT n.market_id, n.gate, n.batch_id, n.trade_id, n.code, n.voucher_code, n.quantity, n.unit
          FROM n WHERE n.accept
        RETURNING gate_entries.id AS entry_id, gate_entries.voucher_code::text AS entry_voucher
    ), codes AS (
        INSERT INTO trace_codes (code, code_type, batch_id, entry_id, trade_id)
        SELECT n.voucher_code, 3, n.batch_id, e.entry_id, n.trade_id FROM entries e JOIN n ON n.voucher_code = e.entry_voucher
    ), chain AS (
        INSERT INTO events (event_time, batch_id, entry_id, trade_id, kind, epcis_type, biz_step, disposition, data)
        SELECT now(), n.batch_id, e.entry_id, n.trade_id, 'market_entry', 'ObjectEvent', 'accepting', 'active',
               jsonb_build_object('market_id', n.market_id, 'market', n.market_name, 'gate', n.gate,
                                  'quantity', n.quantity, 'unit', n.unit, 'voucher_code', n.voucher_code,
                                  'scanned_code', n.code)
          FROM entries e JOIN n ON n.voucher_code = e.entry_voucher
    ), scans AS (
        INSERT INTO gate_scans (market_id, gate, idempotency_key, request_hash, code, quantity, unit, decision,
                                reasons, entry_id)
        SELECT n.market_id, n.gate, n.key, n.request_hash, n.code, n.quantity, n.unit,
               CASE WHEN n.accept THEN 'accept' ELSE 'reject' END, n.why, e.entry_id
          FROM n LEFT JOIN entries e ON e.entry_voucher = n.voucher_code AND n.accept
         ORDER BY n.market_id, n.key
        ON CONFLICT (market_id, idempotency_key) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO v_written FROM scans;
    IF v_written < cardinality(n_i) THEN
        RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'gate_scan_key_raced',
              DETAIL = 'an idempotency key of the group was claimed concurrently by another statement';
    END IF;
END $$;
