-- Sandbox transactions, as the sled engine keeps them: the processor's bytes by id (the
-- sandbox owns their format), and per terminal an index of the ones it may still capture.
CREATE TABLE sandbox_txns (
    id         bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    rec        bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sandbox_index (
    terminal bytea NOT NULL CHECK (octet_length(terminal) = 16),
    id       bytea NOT NULL CHECK (octet_length(id) = 16),
    PRIMARY KEY (terminal, id)
);
