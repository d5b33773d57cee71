-- Messages that are not valid events, with why. Their offsets count as consumed: written in
-- the same transaction as the batch they came with.
CREATE TABLE dead_letters (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    -- The message value as received (at most 64 KiB of it; NULL for a tombstone).
    raw          bytea,
    -- Bounded kind (the metric label), e.g. invalid_json, missing_field, postgres_rejected.
    reason       text        NOT NULL,
    -- What exactly was wrong, in a sentence (or PostgreSQL's error message).
    detail       text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);

CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
