-- Coverage, complete and dated (issue 14, items 1 and 2).
--
-- Tags: a producer may be a leading enterprise (龙头企业) or a state farm (国营牧场), which must be traced 100 %.
ALTER TABLE producers
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}'
        CHECK (tags <@ ARRAY['leading_enterprise', 'state_farm']::text[]);
CREATE INDEX producers_tagged_idx ON producers (region_code) INCLUDE (id, tags, created_at, last_issued_at)
    WHERE tags <> '{}';

-- The history of producers.last_issued_at, a row per producer and China day on which it had codes issued (a batch
-- registered, package codes issued): "traced at the end of day D" is a row within the 12 months before D. Kept by a
-- trigger on the column the undated notion reads, so the two cannot disagree; filled from batches and code_ranges.
CREATE TABLE producer_issue_days (
    producer_id bigint NOT NULL REFERENCES producers (id) ON DELETE CASCADE,
    issued_on   date   NOT NULL,
    PRIMARY KEY (producer_id, issued_on)
);
INSERT INTO producer_issue_days (producer_id, issued_on)
SELECT b.producer_id, (b.created_at AT TIME ZONE 'Asia/Shanghai')::date FROM batches b
UNION
SELECT b.producer_id, (c.created_at AT TIME ZONE 'Asia/Shanghai')::date FROM code_ranges c JOIN batches b ON b.id = c.batch_id;

CREATE FUNCTION tracecode_producer_issued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO producer_issue_days (producer_id, issued_on)
    VALUES (NEW.id, (NEW.last_issued_at AT TIME ZONE 'Asia/Shanghai')::date)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER producers_issued AFTER UPDATE OF last_issued_at ON producers
    FOR EACH ROW WHEN (NEW.last_issued_at IS NOT NULL AND NEW.last_issued_at IS DISTINCT FROM OLD.last_issued_at)
    EXECUTE FUNCTION tracecode_producer_issued();

-- A product is traced at D when one of its batches was registered within the 12 months before D: one probe.
CREATE INDEX batches_product_time_idx ON batches (product_id, created_at);

-- Designations (重大创建认定): a county or zone designated on a date, reviewed against the 80 % line.
CREATE TABLE designations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region_code   char(6) NOT NULL REFERENCES regions (code),
    kind          text    NOT NULL CHECK (kind IN ('quality_safety_county', 'demonstration_zone', 'other')),
    name          text    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    designated_on date    NOT NULL,
    review_on     date    NOT NULL CHECK (review_on >= designated_on),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX designations_region_idx ON designations (region_code);
