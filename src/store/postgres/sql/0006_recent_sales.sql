-- Schema 6 changes no column: `rec` may now carry the terminal's recent sales after the
-- record (a postcard list, issue 9). A binary of schema 5 would ignore them and then never
-- match `rec` again in compare-and-swap, so the version bump keeps it from serving.
COMMENT ON COLUMN terminals.rec IS
    'postcard TerminalRecord, then (schema 6) the terminal''s recent sales as a postcard list when it has any';
