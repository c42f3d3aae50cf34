-- The stores of the other services, so every node of a cluster sees the same ones. Records
-- are kept whole in `rec` in the sled engine's encoding (profiles JSON, the others postcard);
-- the columns beside it are what the statements select or lock by. Text keys compare
-- byte-wise (COLLATE "C"), the order the sled engine lists them in.

-- Merchant and application profiles (issue 10).
CREATE TABLE merchant_profiles (
    service_key text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    rec         bytea NOT NULL,
    PRIMARY KEY (service_key, id)
);
CREATE TABLE application_profiles (
    id  text COLLATE "C" PRIMARY KEY,
    rec bytea NOT NULL
);
-- Fresh applicationProfileIds, past the dev sample's (14560), as the sled engine hands out.
CREATE SEQUENCE application_profile_ids START 100000;

-- POS pairing (issue 11): live codes by keyed hash (one per slot), the certificate each POS
-- holds, and the deny list. `failures` is the code's wrong tries (the record's own field is
-- overridden by it on read).
CREATE TABLE pairing_codes (
    hash       bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
    slot       text COLLATE "C" NOT NULL UNIQUE,
    expires_ms bigint NOT NULL,
    failures   integer NOT NULL,
    rec        bytea NOT NULL
);
CREATE TABLE pairing_certs (
    pos_id text COLLATE "C" PRIMARY KEY,
    rec    bytea NOT NULL
);
CREATE TABLE pairing_denied (
    fingerprint bytea PRIMARY KEY CHECK (octet_length(fingerprint) = 32),
    rec         bytea NOT NULL
);

-- Cloud Connector (issue 12): OAuth2 clients and device presence.
CREATE TABLE connector_clients (
    id  text COLLATE "C" PRIMARY KEY,
    rec bytea NOT NULL
);
CREATE TABLE connector_devices (
    tsn    text COLLATE "C" PRIMARY KEY,
    node   text,
    online boolean NOT NULL,
    rec    bytea NOT NULL
);
CREATE INDEX connector_devices_node ON connector_devices (node) WHERE online;
-- A claim by serial alone finds make/model/serial: the tsn after its last '/' (tsn_serial).
CREATE INDEX connector_devices_serial ON connector_devices ((regexp_replace(tsn, '^.*/', '')), tsn);
