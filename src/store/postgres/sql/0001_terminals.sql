-- Terminal records. `rec` is the whole TerminalRecord (postcard), the value compare-and-swap
-- compares; the other columns copy fields operators and the refresh sweep query.
CREATE TABLE terminals (
    id           bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    rec          bytea NOT NULL,
    last_counter bigint NOT NULL,
    refresh_flag boolean NOT NULL,
    revoked      boolean NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
