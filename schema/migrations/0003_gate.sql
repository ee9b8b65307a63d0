-- Markets and their gates: scans (idempotent, every decision kept), entries (accepted scans, each
-- with its market entry voucher), trades out of entries (each with its circulation code), scan
-- counters of consumer resolves, and the link from codes and events to entries and trades.

CREATE TABLE markets (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    region_code         char(6) NOT NULL REFERENCES regions (code),
    admitted_categories text[],  -- NULL: the market admits every category
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- How much of a batch markets have admitted, across all gates: checked and raised in one statement.
ALTER TABLE batches ADD COLUMN admitted numeric NOT NULL DEFAULT 0 CHECK (admitted >= 0);
ALTER TABLE batches ADD CONSTRAINT batches_admitted_within_quantity CHECK (admitted <= quantity);

CREATE TABLE gate_entries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    market_id    bigint   NOT NULL REFERENCES markets (id),
    gate         text     NOT NULL,
    batch_id     bigint   NOT NULL REFERENCES batches (id),
    trade_id     bigint,  -- the trade whose circulation code was scanned, if any
    scanned_code char(20) NOT NULL,
    voucher_code char(20) NOT NULL UNIQUE,
    quantity     numeric  NOT NULL CHECK (quantity > 0),
    unit         text     NOT NULL,
    traded       numeric  NOT NULL DEFAULT 0 CHECK (traded >= 0),
    scanned_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (traded <= quantity)
);
CREATE INDEX gate_entries_batch_idx ON gate_entries (batch_id);

CREATE TABLE trades (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id          bigint   NOT NULL REFERENCES gate_entries (id),
    circulation_code  char(20) NOT NULL UNIQUE,
    buyer_name        text     NOT NULL,
    buyer_credit_code char(18),
    buyer_contact     text     NOT NULL DEFAULT '',
    quantity          numeric  NOT NULL CHECK (quantity > 0),
    unit              text     NOT NULL,
    admitted          numeric  NOT NULL DEFAULT 0 CHECK (admitted >= 0),
    idempotency_key   text     NOT NULL,
    request_hash      bytea    NOT NULL,
    traded_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (admitted <= quantity),
    UNIQUE (entry_id, idempotency_key)
);
ALTER TABLE gate_entries ADD CONSTRAINT gate_entries_trade_fk FOREIGN KEY (trade_id) REFERENCES trades (id);

CREATE TABLE gate_scans (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    market_id       bigint  NOT NULL REFERENCES markets (id),
    gate            text    NOT NULL,
    idempotency_key text    NOT NULL,
    request_hash    bytea   NOT NULL,
    code            text    NOT NULL,
    quantity        numeric NOT NULL,
    unit            text    NOT NULL,
    decision        text    NOT NULL DEFAULT 'pending' CHECK (decision IN ('pending', 'accept', 'reject')),
    reasons         text[]  NOT NULL DEFAULT '{}',
    entry_id        bigint  REFERENCES gate_entries (id),
    scanned_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (market_id, idempotency_key)
);

ALTER TABLE trace_codes ADD COLUMN entry_id bigint;
ALTER TABLE trace_codes ADD COLUMN trade_id bigint;
ALTER TABLE events ADD COLUMN entry_id bigint;
ALTER TABLE events ADD COLUMN trade_id bigint;

CREATE TABLE scan_counts (
    code       text PRIMARY KEY,
    count      bigint NOT NULL CHECK (count >= 0),
    first_at   timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One gate scan, decided and recorded in one statement, so that no lock is held across a round trip.
-- The caller passes a voucher code reserved beforehand; it is used only when the scan is accepted.
-- Returns the decision, its reasons, the voucher code (accepted only) and whether this was a replay
-- of an earlier request with the same idempotency key (then nothing is written).
CREATE FUNCTION tracecode_gate_scan(
    p_market_id bigint, p_gate text, p_key text, p_request_hash bytea, p_code text, p_quantity numeric,
    p_unit text, p_voucher_code text, p_today date
) RETURNS TABLE (decision text, reasons text[], voucher_code text, batch_id bigint, is_replay boolean,
                is_conflict boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_scan_id   bigint;
    v_code record;
    v_batch   record;
    v_trade   record;
    v_market  record;
    v_why       text[] := '{}';
    v_entry_id bigint;
    v_batch_id bigint;  -- NULL until the code is found
BEGIN
    -- Claim the idempotency key; a concurrent claim of the same key waits here for the other to finish.
    INSERT INTO gate_scans (market_id, gate, idempotency_key, request_hash, code, quantity, unit)
    VALUES (p_market_id, p_gate, p_key, p_request_hash, p_code, p_quantity, p_unit)
    ON CONFLICT (market_id, idempotency_key) DO NOTHING
    RETURNING id INTO v_scan_id;
    IF v_scan_id IS NULL THEN
        RETURN QUERY
            SELECT s.decision, s.reasons, e.voucher_code::text, e.batch_id, true, s.request_hash <> p_request_hash
              FROM gate_scans s LEFT JOIN gate_entries e ON e.id = s.entry_id
             WHERE s.market_id = p_market_id AND s.idempotency_key = p_key;
        RETURN;
    END IF;

    SELECT tc.code_type, tc.batch_id, tc.trade_id INTO v_code FROM trace_codes tc WHERE tc.code = p_code::char(20);
    IF NOT FOUND THEN
        v_why := ARRAY['unknown_code'];
    ELSIF v_code.code_type = 3 THEN
        v_why := ARRAY['voucher_not_admissible'];
    ELSE
        SELECT b.id, b.status, b.expires_on, b.inspection, b.certificate, b.quantity, b.admitted, b.unit,
               pd.category
          INTO v_batch
          FROM batches b JOIN products pd ON pd.id = b.product_id
         WHERE b.id = v_code.batch_id;
        v_batch_id := v_batch.id;
        SELECT m.name, m.admitted_categories INTO v_market FROM markets m WHERE m.id = p_market_id;
        IF v_batch.status = 'recalled' THEN v_why := array_append(v_why, 'recalled'); END IF;
        IF v_batch.expires_on IS NOT NULL AND v_batch.expires_on < p_today THEN v_why := array_append(v_why, 'expired'); END IF;
        IF v_batch.inspection IS NOT NULL AND v_batch.inspection->>'result' = 'fail' THEN
            v_why := array_append(v_why, 'inspection_failed');
        END IF;
        IF v_batch.certificate IS NULL THEN v_why := array_append(v_why, 'no_certificate'); END IF;
        IF v_market.admitted_categories IS NOT NULL AND NOT (v_batch.category = ANY (v_market.admitted_categories)) THEN
            v_why := array_append(v_why, 'not_for_this_market');
        END IF;
        IF p_unit <> v_batch.unit THEN v_why := array_append(v_why, 'unit_mismatch'); END IF;
        IF v_code.trade_id IS NOT NULL THEN
            SELECT t.id, t.quantity, t.admitted INTO v_trade FROM trades t WHERE t.id = v_code.trade_id;
            IF cardinality(v_why) = 0 THEN
                UPDATE trades t SET admitted = t.admitted + p_quantity
                 WHERE t.id = v_trade.id AND t.admitted + p_quantity <= t.quantity;
                IF NOT FOUND THEN v_why := array_append(v_why, 'quantity_exceeds_batch'); END IF;
            ELSIF v_trade.admitted + p_quantity > v_trade.quantity THEN
                v_why := array_append(v_why, 'quantity_exceeds_batch');
            END IF;
        ELSIF cardinality(v_why) = 0 THEN
            -- The row lock lasts only until this statement's transaction commits.
            UPDATE batches b SET admitted = b.admitted + p_quantity
             WHERE b.id = v_batch.id AND b.admitted + p_quantity <= b.quantity;
            IF NOT FOUND THEN v_why := array_append(v_why, 'quantity_exceeds_batch'); END IF;
        ELSIF v_batch.admitted + p_quantity > v_batch.quantity THEN
            v_why := array_append(v_why, 'quantity_exceeds_batch');
        END IF;
    END IF;

    IF cardinality(v_why) > 0 THEN
        UPDATE gate_scans s SET decision = 'reject', reasons = v_why WHERE s.id = v_scan_id;
        RETURN QUERY SELECT 'reject'::text, v_why, NULL::text, v_batch_id, false, false;
        RETURN;
    END IF;

    INSERT INTO gate_entries (market_id, gate, batch_id, trade_id, scanned_code, voucher_code, quantity, unit)
    VALUES (p_market_id, p_gate, v_batch.id, v_code.trade_id, p_code, p_voucher_code, p_quantity, p_unit)
    RETURNING id INTO v_entry_id;
    INSERT INTO trace_codes (code, code_type, batch_id, entry_id, trade_id)
    VALUES (p_voucher_code, 3, v_batch.id, v_entry_id, v_code.trade_id);
    INSERT INTO events (event_time, batch_id, entry_id, trade_id, kind, epcis_type, biz_step, disposition, data)
    VALUES (now(), v_batch.id, v_entry_id, v_code.trade_id, 'market_entry', 'ObjectEvent', 'accepting', 'active',
            jsonb_build_object('market_id', p_market_id, 'market', v_market.name, 'gate', p_gate, 'quantity', p_quantity, 'unit', p_unit,
                               'voucher_code', p_voucher_code, 'scanned_code', p_code));
    UPDATE gate_scans s SET decision = 'accept', entry_id = v_entry_id WHERE s.id = v_scan_id;
    RETURN QUERY SELECT 'accept'::text, v_why, p_voucher_code, v_batch.id, false, false;
END $$;

-- A trade out of a market entry, in one statement: the buyer takes part of the lot and gets a
-- circulation code (reserved beforehand by the caller). `error` is NULL on success, else one of
-- unknown_voucher, wrong_market, quantity_exceeds_entry, unit_mismatch (nothing is written then).
CREATE FUNCTION tracecode_trade(
    p_market_id bigint, p_voucher_code text, p_key text, p_request_hash bytea, p_buyer_name text,
    p_buyer_credit_code text, p_buyer_contact text, p_quantity numeric, p_unit text, p_circulation_code text
) RETURNS TABLE (error text, circulation_code text, batch_id bigint, is_replay boolean, is_conflict boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_entry    record;
    v_trade_id bigint;
BEGIN
    SELECT e.id, e.market_id, e.batch_id, e.unit INTO v_entry
      FROM gate_entries e WHERE e.voucher_code = p_voucher_code::char(20);
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown_voucher'::text, NULL::text, NULL::bigint, false, false;
        RETURN;
    END IF;
    IF p_market_id IS NOT NULL AND v_entry.market_id <> p_market_id THEN
        RETURN QUERY SELECT 'wrong_market'::text, NULL::text, NULL::bigint, false, false;
        RETURN;
    END IF;
    INSERT INTO trades (entry_id, circulation_code, buyer_name, buyer_credit_code, buyer_contact, quantity, unit,
                        idempotency_key, request_hash)
    VALUES (v_entry.id, p_circulation_code, p_buyer_name, p_buyer_credit_code, p_buyer_contact, p_quantity, p_unit,
            p_key, p_request_hash)
    ON CONFLICT (entry_id, idempotency_key) DO NOTHING
    RETURNING id INTO v_trade_id;
    IF v_trade_id IS NULL THEN
        RETURN QUERY
            SELECT NULL::text, t.circulation_code::text, v_entry.batch_id, true, t.request_hash <> p_request_hash
              FROM trades t WHERE t.entry_id = v_entry.id AND t.idempotency_key = p_key;
        RETURN;
    END IF;
    IF p_unit <> v_entry.unit THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'unit_mismatch';
    END IF;
    UPDATE gate_entries e SET traded = e.traded + p_quantity
     WHERE e.id = v_entry.id AND e.traded + p_quantity <= e.quantity;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'quantity_exceeds_entry';
    END IF;
    INSERT INTO trace_codes (code, code_type, batch_id, entry_id, trade_id)
    VALUES (p_circulation_code, 2, v_entry.batch_id, v_entry.id, v_trade_id);
    INSERT INTO events (event_time, batch_id, entry_id, trade_id, kind, epcis_type, biz_step, disposition, data)
    VALUES (now(), v_entry.batch_id, v_entry.id, v_trade_id, 'trade', 'ObjectEvent', 'shipping', 'in_transit',
            jsonb_build_object('buyer', p_buyer_name, 'quantity', p_quantity, 'unit', p_unit,
                               'circulation_code', p_circulation_code, 'voucher_code', p_voucher_code));
    RETURN QUERY SELECT NULL::text, p_circulation_code, v_entry.batch_id, false, false;
END $$;
