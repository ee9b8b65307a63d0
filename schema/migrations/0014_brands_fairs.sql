-- Brands (品牌推选) and fairs (农业展会), two of the four hooks (issue 14). A brand keeps its members; a member is
-- added only while traced (resolver.api.hooks), and shows its current state when listed. A fair keeps its kind,
-- which decides the rule its exhibitors and door scans are checked by (resolver.api.fairs).
CREATE TABLE brands (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind        text    NOT NULL CHECK (kind IN ('regional_public', 'enterprise')),
    region_code char(6) NOT NULL REFERENCES regions (code),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE brand_members (
    brand_id    bigint NOT NULL REFERENCES brands (id),
    producer_id bigint NOT NULL REFERENCES producers (id),
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (brand_id, producer_id)
);

CREATE TABLE fairs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind            text NOT NULL CHECK (kind IN ('national', 'overseas', 'provincial')),
    starts_on       date NOT NULL,
    ends_on         date NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_on >= starts_on)
);
