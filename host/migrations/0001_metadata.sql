-- sandserve metadata in PostgreSQL (cluster mode): the records of the sled registry as JSONB,
-- with their key columns. Foreign keys make "the tenant must exist when a record is written"
-- hold under concurrent deletion of the tenant.

CREATE TABLE tenants (
    name   text PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE tokens (
    token_id text PRIMARY KEY,
    tenant   text NOT NULL REFERENCES tenants (name),
    record   jsonb NOT NULL
);
CREATE INDEX tokens_by_tenant ON tokens (tenant);

-- The next version of each model; never reset, so deleted versions are never reused (not
-- even after the tenant is deleted and created again, as with sled).
CREATE TABLE model_versions (
    tenant       text NOT NULL,
    name         text NOT NULL,
    next_version bigint NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE images (
    tenant  text NOT NULL REFERENCES tenants (name),
    name    text NOT NULL,
    version bigint NOT NULL,
    record  jsonb NOT NULL,
    PRIMARY KEY (tenant, name, version)
);

CREATE TABLE endpoints (
    tenant text NOT NULL REFERENCES tenants (name),
    name   text NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- Server-wide values (the admin credential).
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);

-- The metadata revision: every write transaction bumps it last, holding this one row's lock
-- until it commits, so revisions commit in order and a follower reading "everything after
-- revision r" never skips a change that commits later with a smaller revision.
CREATE TABLE revision (
    id       integer PRIMARY KEY CHECK (id = 1),
    revision bigint NOT NULL
);
INSERT INTO revision (id, revision) VALUES (1, 0);

-- The outbox: what each revision changed (kind, tenant, name, version), for the nodes that
-- follow. Pruned after a while; a node further behind than the oldest kept row reloads all.
CREATE TABLE changes (
    revision bigint PRIMARY KEY,
    kind     text NOT NULL,
    tenant   text NOT NULL DEFAULT '',
    name     text NOT NULL DEFAULT '',
    version  bigint,
    at       timestamptz NOT NULL DEFAULT now()
);

-- Cluster membership: each node's lease, renewed by its heartbeat.
CREATE TABLE nodes (
    id            text PRIMARY KEY,
    url           text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    lease_expires timestamptz NOT NULL
);
