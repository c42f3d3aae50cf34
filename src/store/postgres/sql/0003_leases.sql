-- Leases: a job that should run on one node at a time (the refresh sweep) is run by the node
-- holding its lease; a lease whose holder stopped renewing it expires and another node takes it.
CREATE TABLE snapgate_leases (
    name   text PRIMARY KEY,
    holder text NOT NULL,
    until  timestamptz NOT NULL
);
