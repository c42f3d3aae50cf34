-- Sandbox transactions: `rec` is the processor's record (postcard); `terminal` indexes a
-- terminal's transactions (CaptureAll, return by id).
CREATE TABLE sandbox_txns (
    id         bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    terminal   bytea NOT NULL CHECK (octet_length(terminal) = 16),
    rec        bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sandbox_txns_terminal ON sandbox_txns (terminal, id);
