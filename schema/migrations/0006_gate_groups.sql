-- Gate scans in groups: a worker sends the scans it received within a moment as one statement and one
-- commit (resolver.gate's group commit), and each scan is decided exactly as it would be alone.
--
-- Locks: every batch and trade the group may admit from is locked first, in id order, then the scans are
-- processed in (market, idempotency key) order. Every group takes its locks in that one order, so two
-- groups on different workers wait for each other instead of deadlocking; the locks last only until the
-- statement's own commit.
--
-- Writes of an accepted scan: the batch's (or trade's) admitted quantity, the entry, the voucher code, the
-- market_entry event, and the scan row written once with its decision (it was inserted as pending and then
-- updated). A repeated key is found by a plain read first; a repeat that races on another worker meets the
-- other's row at the final insert, and the statement then fails with serialization_failure (40001),
-- writing nothing: the caller runs the group again and the repeat is then a replay.
CREATE FUNCTION tracecode_gate_scans(
    p_market_ids bigint[], p_gates text[], p_keys text[], p_request_hashes bytea[], p_codes text[],
    p_quantities numeric[], p_units text[], p_voucher_codes text[], p_today date
) RETURNS TABLE (ord integer, decision text, reasons text[], voucher_code text, batch_id bigint,
                 is_replay boolean, is_conflict boolean)
LANGUAGE plpgsql AS $$
DECLARE
    s          record;
    v_prev     record;
    v_batch    record;
    v_trade    record;
    v_market   record;
    v_market_id bigint;  -- the market in v_market
    v_batch_id bigint;   -- NULL until the code is found
    v_why      text[];
    v_entry_id bigint;
    v_scan_id  bigint;
    v_types    smallint[];
    v_batches  bigint[];
    v_trades   bigint[];
BEGIN
    SELECT array_agg(tc.code_type ORDER BY u.i), array_agg(tc.batch_id ORDER BY u.i),
           array_agg(tc.trade_id ORDER BY u.i)
      INTO v_types, v_batches, v_trades
      FROM unnest(p_codes) WITH ORDINALITY AS u(code, i)
      -- LATERAL ... LIMIT 1: one index probe of one partition per code, never a hash join over every partition.
      LEFT JOIN LATERAL (SELECT t.code_type, t.batch_id, t.trade_id FROM trace_codes t
                          WHERE t.code = u.code::char(20) LIMIT 1) tc ON true;

    PERFORM 1 FROM batches b
     WHERE b.id IN (SELECT x.batch_id FROM unnest(v_types, v_batches, v_trades) AS x(code_type, batch_id, trade_id)
                     WHERE x.code_type <> 3 AND x.trade_id IS NULL)
     ORDER BY b.id FOR UPDATE;
    PERFORM 1 FROM trades t
     WHERE t.id IN (SELECT x.trade_id FROM unnest(v_types, v_trades) AS x(code_type, trade_id)
                     WHERE x.code_type <> 3)
     ORDER BY t.id FOR UPDATE;

    FOR s IN
        SELECT u.*
          FROM unnest(p_market_ids, p_gates, p_keys, p_request_hashes, p_codes, p_quantities, p_units,
                      p_voucher_codes, v_types, v_batches, v_trades)
               WITH ORDINALITY AS u(market_id, gate, key, request_hash, code, quantity, unit, voucher_code,
                                    code_type, code_batch_id, trade_id, i)
         ORDER BY u.market_id, u.key, u.i
    LOOP
        ord := s.i;
        SELECT gs.decision, gs.reasons, gs.request_hash, e.voucher_code::text AS voucher_code, e.batch_id
          INTO v_prev
          FROM gate_scans gs LEFT JOIN gate_entries e ON e.id = gs.entry_id
         WHERE gs.market_id = s.market_id AND gs.idempotency_key = s.key;
        IF FOUND THEN
            decision := v_prev.decision; reasons := v_prev.reasons; voucher_code := v_prev.voucher_code;
            batch_id := v_prev.batch_id; is_replay := true; is_conflict := v_prev.request_hash <> s.request_hash;
            RETURN NEXT;
            CONTINUE;
        END IF;

        v_why := '{}';
        v_batch_id := NULL;
        IF s.code_type IS NULL THEN
            v_why := ARRAY['unknown_code'];
        ELSIF s.code_type = 3 THEN
            v_why := ARRAY['voucher_not_admissible'];
        ELSE
            SELECT b.id, b.status, b.expires_on, b.inspection, b.certificate, b.quantity, b.admitted, b.unit,
                   pd.category
              INTO v_batch
              FROM batches b JOIN products pd ON pd.id = b.product_id
             WHERE b.id = s.code_batch_id;
            v_batch_id := v_batch.id;
            IF v_market_id IS DISTINCT FROM s.market_id THEN
                SELECT m.name, m.admitted_categories INTO v_market FROM markets m WHERE m.id = s.market_id;
                v_market_id := s.market_id;
            END IF;
            IF v_batch.status = 'recalled' THEN v_why := array_append(v_why, 'recalled'); END IF;
            IF v_batch.expires_on IS NOT NULL AND v_batch.expires_on < p_today THEN
                v_why := array_append(v_why, 'expired');
            END IF;
            IF v_batch.inspection IS NOT NULL AND v_batch.inspection->>'result' = 'fail' THEN
                v_why := array_append(v_why, 'inspection_failed');
            END IF;
            IF v_batch.certificate IS NULL THEN v_why := array_append(v_why, 'no_certificate'); END IF;
            IF v_market.admitted_categories IS NOT NULL
               AND NOT (v_batch.category = ANY (v_market.admitted_categories)) THEN
                v_why := array_append(v_why, 'not_for_this_market');
            END IF;
            IF s.unit <> v_batch.unit THEN v_why := array_append(v_why, 'unit_mismatch'); END IF;
            IF s.trade_id IS NOT NULL THEN
                SELECT t.id, t.quantity, t.admitted INTO v_trade FROM trades t WHERE t.id = s.trade_id;
                IF v_trade.admitted + s.quantity > v_trade.quantity THEN
                    v_why := array_append(v_why, 'quantity_exceeds_batch');
                ELSIF cardinality(v_why) = 0 THEN
                    UPDATE trades t SET admitted = t.admitted + s.quantity WHERE t.id = s.trade_id;
                END IF;
            ELSIF v_batch.admitted + s.quantity > v_batch.quantity THEN
                v_why := array_append(v_why, 'quantity_exceeds_batch');
            ELSIF cardinality(v_why) = 0 THEN
                UPDATE batches b SET admitted = b.admitted + s.quantity WHERE b.id = v_batch.id;
            END IF;
        END IF;

        v_entry_id := NULL;
        IF cardinality(v_why) = 0 THEN
            INSERT INTO gate_entries (market_id, gate, batch_id, trade_id, scanned_code, voucher_code, quantity, unit)
            VALUES (s.market_id, s.gate, v_batch.id, s.trade_id, s.code, s.voucher_code, s.quantity, s.unit)
            RETURNING id INTO v_entry_id;
            INSERT INTO trace_codes (code, code_type, batch_id, entry_id, trade_id)
            VALUES (s.voucher_code, 3, v_batch.id, v_entry_id, s.trade_id);
            INSERT INTO events (event_time, batch_id, entry_id, trade_id, kind, epcis_type, biz_step, disposition, data)
            VALUES (now(), v_batch.id, v_entry_id, s.trade_id, 'market_entry', 'ObjectEvent', 'accepting', 'active',
                    jsonb_build_object('market_id', s.market_id, 'market', v_market.name, 'gate', s.gate,
                                       'quantity', s.quantity, 'unit', s.unit, 'voucher_code', s.voucher_code,
                                       'scanned_code', s.code));
        END IF;
        INSERT INTO gate_scans (market_id, gate, idempotency_key, request_hash, code, quantity, unit, decision,
                                reasons, entry_id)
        VALUES (s.market_id, s.gate, s.key, s.request_hash, s.code, s.quantity, s.unit,
                CASE WHEN v_entry_id IS NULL THEN 'reject' ELSE 'accept' END, v_why, v_entry_id)
        ON CONFLICT (market_id, idempotency_key) DO NOTHING
        RETURNING id INTO v_scan_id;
        IF v_scan_id IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'gate_scan_key_raced',
                  DETAIL = format('idempotency key %s of market %s was claimed concurrently', s.key, s.market_id);
        END IF;

        decision := CASE WHEN v_entry_id IS NULL THEN 'reject' ELSE 'accept' END;
        reasons := v_why;
        voucher_code := CASE WHEN v_entry_id IS NULL THEN NULL ELSE s.voucher_code END;
        batch_id := v_batch_id;
        is_replay := false;
        is_conflict := false;
        RETURN NEXT;
    END LOOP;
END $$;

-- The one-scan function of 0003 becomes a group of one, so that every scan takes its locks in one order.
CREATE OR REPLACE FUNCTION tracecode_gate_scan(
    p_market_id bigint, p_gate text, p_key text, p_request_hash bytea, p_code text, p_quantity numeric,
    p_unit text, p_voucher_code text, p_today date
) RETURNS TABLE (decision text, reasons text[], voucher_code text, batch_id bigint, is_replay boolean,
                is_conflict boolean)
LANGUAGE sql AS $$
    SELECT g.decision, g.reasons, g.voucher_code, g.batch_id, g.is_replay, g.is_conflict
      FROM tracecode_gate_scans(ARRAY[p_market_id], ARRAY[p_gate], ARRAY[p_key], ARRAY[p_request_hash],
                                ARRAY[p_code], ARRAY[p_quantity], ARRAY[p_unit], ARRAY[p_voucher_code], p_today) AS g
$$;
