-- The cluster secret: the HMAC key of the seal on requests one node forwards to another
-- (cluster/seal.rs). Written once, by the first node that finds the row missing (a random
-- value it generates), and read by every node at start; never answered by the API.
CREATE TABLE cluster_secret (
    id     integer PRIMARY KEY CHECK (id = 1),
    secret bytea NOT NULL CHECK (length(secret) >= 32)
);
