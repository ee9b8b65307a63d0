-- Core registry: regions, producers, products, certifications, tokens.

CREATE TABLE regions (
    code            char(6) PRIMARY KEY,
    name            text     NOT NULL,
    level           smallint NOT NULL CHECK (level IN (1, 2, 3)),
    parent_code     char(6)  REFERENCES regions (code),
    prefecture_code char(6),
    province_code   char(6)  NOT NULL
);
CREATE INDEX regions_parent_idx ON regions (parent_code);
CREATE INDEX regions_prefecture_idx ON regions (prefecture_code);
CREATE INDEX regions_province_idx ON regions (province_code);

CREATE TABLE producers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    credit_code char(18) NOT NULL UNIQUE,
    name        text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind        text     NOT NULL CHECK (kind IN ('enterprise', 'cooperative', 'family_farm', 'individual')),
    region_code char(6)  NOT NULL REFERENCES regions (code),
    contact     text     NOT NULL DEFAULT '',
    batch_count integer  NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX producers_region_idx ON producers (region_code);

CREATE TABLE products (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    producer_id bigint NOT NULL REFERENCES producers (id),
    name        text   NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    category    text   NOT NULL,
    gtin        char(14),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (producer_id, name, category)
);
CREATE INDEX products_gtin_idx ON products (gtin) WHERE gtin IS NOT NULL;

CREATE TABLE certifications (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text   NOT NULL CHECK (kind IN ('green', 'organic', 'gi')),
    number      text   NOT NULL,
    producer_id bigint NOT NULL REFERENCES producers (id),
    product_id  bigint REFERENCES products (id),
    valid_from  date   NOT NULL,
    valid_to    date   NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, number),
    CHECK (valid_to >= valid_from)
);
CREATE INDEX certifications_producer_idx ON certifications (producer_id);

CREATE TABLE tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE,
    role       text  NOT NULL CHECK (role IN ('admin', 'regulator', 'producer', 'gate')),
    scope      text  NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
