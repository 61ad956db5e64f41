-- The needs workload's tables as `runnel demo` and bench/pipeline_bench.sh create them:
-- the reference schema (../shared/data/needs/original_schema.sql) with primary keys,
-- and Runnel's own demo product catalogue.
CREATE TABLE needs (
    id                      integer PRIMARY KEY,
    age                     integer,
    gender                  integer,
    family_members          integer,
    financial_education     real,
    risk_propensity         real,
    income                  real,
    wealth                  real,
    income_investment       integer,
    accumulation_investment integer,
    financial_status        real,
    client_id               integer
);
CREATE TABLE products (
    id_product   integer PRIMARY KEY,
    income       integer NOT NULL,
    accumulation integer NOT NULL,
    risk         real NOT NULL,
    description  text NOT NULL
);
-- Runnel's own demo catalogue.
INSERT INTO products VALUES
    (1, 1, 0, 0.10, 'Treasury bond ladder'),
    (2, 1, 0, 0.25, 'Short-term corporate bond fund'),
    (3, 1, 0, 0.40, 'Dividend income fund'),
    (4, 1, 0, 0.60, 'High-yield bond fund'),
    (5, 0, 1, 0.15, 'Capital-protected savings plan'),
    (6, 0, 1, 0.35, 'Balanced pension fund'),
    (7, 0, 1, 0.55, 'Global equity index fund'),
    (8, 0, 1, 0.75, 'Emerging markets equity fund'),
    (9, 1, 1, 0.45, 'Multi-asset income and growth fund'),
    (10, 1, 1, 0.85, 'Thematic technology fund');
