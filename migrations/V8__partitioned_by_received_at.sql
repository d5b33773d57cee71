-- events and dead_letters become range-partitioned by received_at (ingestion time, the
-- database's clock at the start of the storing transaction), so that whole partitions expire
-- with --retention instead of DELETE, and the partition taking inserts keeps small indexes.
--
-- Why ingestion time and not event time: received_at is set by the database, so every new row
-- falls in the partition aurore created ahead for "now"; occurred_at is whatever a producer
-- wrote, and one skewed clock would scatter rows across old partitions (or none) and let
-- retention drop events the moment they arrive.
--
-- The primary key must include the partition key: (topic, partition, offset, received_at). It
-- no longer rejects a second copy of a message stored at another time; what keeps a message
-- from being stored twice is what always did: the fenced consumer_offsets row, moved in the same
-- transaction as the rows (V2, V5), and a dead letter leaving dead_letters in the transaction
-- that makes it an event (V7).
--
-- The rows already stored are not copied: the old table is attached whole as one partition,
-- [MINVALUE, the latest received_at or now), named <table>_before_partitioning. Ingest is locked
-- out while this runs: the new primary key's index is built on the old rows and the range is
-- checked by one scan (README: "Partitions and retention"). An empty old table is dropped instead.
-- aurore creates the partitions after it (src/partitions.rs), ahead of need.

ALTER TABLE events RENAME TO events_before_partitioning;
ALTER INDEX events_pkey RENAME TO events_before_partitioning_pkey;
ALTER INDEX events_service_occurred_at RENAME TO events_before_partitioning_service_occurred_at;

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
    extra        jsonb,
    PRIMARY KEY (topic, partition, "offset", received_at)
) PARTITION BY RANGE (received_at);

CREATE INDEX events_service_occurred_at ON events (service, occurred_at);

ALTER TABLE dead_letters RENAME TO dead_letters_before_partitioning;
ALTER INDEX dead_letters_pkey RENAME TO dead_letters_before_partitioning_pkey;
ALTER INDEX dead_letters_received_at RENAME TO dead_letters_before_partitioning_received_at;

CREATE TABLE dead_letters (
    topic            text        NOT NULL,
    partition        integer     NOT NULL,
    "offset"         bigint      NOT NULL,
    raw              bytea,
    reason           text        NOT NULL,
    detail           text        NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    size             integer,
    message_key      bytea,
    kafka_timestamp  timestamptz,
    PRIMARY KEY (topic, partition, "offset", received_at)
) PARTITION BY RANGE (received_at);

CREATE INDEX dead_letters_received_at ON dead_letters (received_at);

DO $$
DECLARE
    t text;
    bound timestamptz;
    g record;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'dead_letters'] LOOP
        -- Whoever was granted the old table keeps the same rights on the new one.
        FOR g IN SELECT grantee, privilege_type FROM information_schema.role_table_grants
                  WHERE table_schema = current_schema() AND table_name = t || '_before_partitioning'
                    AND grantee <> current_user LOOP
            EXECUTE format('GRANT %s ON %I TO %I', g.privilege_type, t, g.grantee);
        END LOOP;
        EXECUTE format('SELECT max(received_at) FROM %I', t || '_before_partitioning') INTO bound;
        IF bound IS NULL THEN
            EXECUTE format('DROP TABLE %I', t || '_before_partitioning');
        ELSE
            bound := greatest(bound, now()) + interval '1 microsecond';
            -- The parent's key includes received_at: ATTACH builds its index on the old rows.
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', t || '_before_partitioning', t || '_before_partitioning_pkey');
            EXECUTE format('COMMENT ON TABLE %I IS %L', t || '_before_partitioning', 'aurore: partition of ' || t);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',
                           t, t || '_before_partitioning', bound);
        END IF;
    END LOOP;
END
$$;
