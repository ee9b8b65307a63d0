-- Batches, the trace codes issued for them (hash-partitioned by code), the per-(type, region)
-- sequences the codes are permuted from, and the chain-of-custody events (range-partitioned by
-- the month they were recorded in).

CREATE TABLE batches (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    producer_id   bigint   NOT NULL REFERENCES producers (id),
    product_id    bigint   NOT NULL REFERENCES products (id),
    trace_code    char(20) NOT NULL UNIQUE,
    long_code     text     NOT NULL UNIQUE,
    lot           text     NOT NULL,
    quantity      numeric  NOT NULL CHECK (quantity > 0),
    unit          text     NOT NULL,
    produced_on   date     NOT NULL,
    expires_on    date,
    origin        text     NOT NULL DEFAULT '',
    inspection    jsonb,
    certificate   jsonb,
    status        text     NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'recalled')),
    recall_reason text,
    recalled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_producer_idx ON batches (producer_id, created_at);

CREATE TABLE code_sequences (
    code_type   smallint NOT NULL CHECK (code_type BETWEEN 1 AND 4),
    region_code char(6)  NOT NULL,
    next_seq    bigint   NOT NULL CHECK (next_seq BETWEEN 0 AND 100000000000),
    PRIMARY KEY (code_type, region_code)
);

CREATE TABLE trace_codes (
    code       char(20) NOT NULL,
    code_type  smallint NOT NULL CHECK (code_type BETWEEN 1 AND 4),
    batch_id   bigint   NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code)
) PARTITION BY HASH (code);

-- Settings the schema was built with (the code partition count cannot change after the fact).
CREATE TABLE schema_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

CREATE FUNCTION tracecode_create_code_partitions(partitions integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    existing integer;
BEGIN
    SELECT value::integer INTO existing FROM schema_settings WHERE name = 'code_partitions';
    IF existing IS NOT NULL THEN
        IF existing <> partitions THEN
            RAISE NOTICE 'trace_codes already has % partitions; keeping them (asked for %)', existing, partitions;
        END IF;
        RETURN existing;
    END IF;
    FOR i IN 0 .. partitions - 1 LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF trace_codes FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
            'trace_codes_p' || lpad(i::text, 3, '0'), partitions, i);
    END LOOP;
    INSERT INTO schema_settings (name, value) VALUES ('code_partitions', partitions::text);
    RETURN partitions;
END $$;

CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    event_time  timestamptz NOT NULL,
    batch_id    bigint NOT NULL,
    kind        text   NOT NULL,
    epcis_type  text   NOT NULL DEFAULT 'ObjectEvent',
    biz_step    text   NOT NULL,
    disposition text,
    data        jsonb  NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, recorded_at)
) PARTITION BY RANGE (recorded_at);
CREATE INDEX events_batch_idx ON events (batch_id, event_time);

-- Monthly partitions from the month of `start_on` for `months` months; existing ones are kept.
CREATE FUNCTION tracecode_ensure_event_partitions(start_on date, months integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
    month_start date := date_trunc('month', start_on)::date;
    name text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        name := 'events_' || to_char(month_start + make_interval(months => i), 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                name, month_start + make_interval(months => i), month_start + make_interval(months => i + 1));
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END $$;
