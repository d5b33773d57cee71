-- One row per Kafka message that was a valid event. The primary key is the message's
-- coordinates, so a replay can never insert a row twice, and rows append in key order per
-- partition (cheap for COPY). `id` is the producer's or derived from the coordinates.
CREATE TABLE events (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    id           uuid        NOT NULL,
    service      text        NOT NULL,
    event_type   text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    payload      jsonb       NOT NULL,
    -- Unknown top-level fields of the message, as an object; NULL when there were none.
    extra        jsonb,
    PRIMARY KEY (topic, partition, "offset")
);

-- The business queries: one service's events over a time range.
CREATE INDEX events_service_occurred_at ON events (service, occurred_at);
