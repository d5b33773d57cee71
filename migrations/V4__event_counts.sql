-- Persisted events per (service, event_type, event-time hour), upserted in the same
-- transaction as the rows, so business metrics never scan `events`.
CREATE TABLE event_counts (
    service      text        NOT NULL,
    event_type   text        NOT NULL,
    hour         timestamptz NOT NULL,
    events       bigint      NOT NULL,
    PRIMARY KEY (service, event_type, hour)
);

CREATE INDEX event_counts_hour ON event_counts (hour);
