-- Lockout counters shared by every node (subjects: address, KSN device, serial).
CREATE TABLE lockout (
    subject         text PRIMARY KEY,
    window_start_ms bigint NOT NULL,
    failures        integer NOT NULL,
    locked_until_ms bigint
);
