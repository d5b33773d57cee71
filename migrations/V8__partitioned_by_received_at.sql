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
-- One partition follows, through tomorrow (UTC); aurore creates the next ones (src/partitions.rs).

-- Bounds are written and read back in this transaction's settings: ISO and UTC, whatever the
-- role's defaults (under DateStyle SQL a zone prints as an abbreviation that may read back as another).
SET LOCAL DateStyle = ISO;
SET LOCAL TimeZone = 'UTC';

-- What the new tables could not carry over is refused, with what to do, before anything changes:
-- objects that would follow the old table (views, publications, foreign keys, triggers, policies),
-- columns and indexes aurore does not know, column privileges, and times that fit no range.
DO $$
DECLARE
    t text;
    found text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'dead_letters'] LOOP
        SELECT string_agg(DISTINCT v.relname, ', ') INTO found
          FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
         WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = t::regclass AND v.oid <> t::regclass;
        IF found IS NOT NULL THEN
            RAISE EXCEPTION 'migration V8 (partitioning % by received_at) stops: views read it (%); drop them, migrate, and create them again', t, found;
        END IF;
        SELECT string_agg(p.pubname, ', ') INTO found
          FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = t::regclass;
        IF found IS NOT NULL THEN
            RAISE EXCEPTION 'migration V8 (partitioning % by received_at) stops: publications include it (%); remove it from them, migrate, and add it again', t, found;
        END IF;
        SELECT string_agg(conname || ' on ' || conrelid::regclass::text, ', ') INTO found
          FROM pg_constraint WHERE contype = 'f' AND (confrelid = t::regclass OR conrelid = t::regclass);
        IF found IS NOT NULL THEN
            RAISE EXCEPTION 'migration V8 (partitioning % by received_at) stops: foreign keys involve it (%); drop them first', t, found;
        END IF;
        SELECT string_agg(tgname, ', ') INTO found FROM pg_trigger WHERE tgrelid = t::regclass AND NOT tgisinternal;
        IF found IS NULL THEN
            SELECT string_agg(polname, ', ') INTO found FROM pg_policy WHERE polrelid = t::regclass;
        END IF;
        IF found IS NOT NULL THEN
            RAISE EXCEPTION 'migration V8 (partitioning % by received_at) stops: it has triggers or row security policies (%); drop them, migrate, and create them on the new table', t, found;
        END IF;
        SELECT string_agg(attname, ', ') INTO found FROM pg_attribute
         WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped
           AND (attname <> ALL (ARRAY['topic', 'partition', 'offset', 'id', 'service', 'event_type', 'occurred_at', 'received_at',
                                      'payload', 'extra', 'raw', 'reason', 'detail', 'size', 'message_key', 'kafka_timestamp'])
                OR attacl IS NOT NULL);
        IF found IS NOT NULL THEN
            RAISE EXCEPTION 'migration V8 (partitioning % by received_at) stops: columns aurore does not know, or with column privileges (%); drop them or revoke those first', t, found;
        END IF;
        SELECT string_agg(i.relname, ', ') INTO found FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
         WHERE x.indrelid = t::regclass AND i.relname NOT IN (t || '_pkey', 'events_service_occurred_at', 'dead_letters_received_at');
        IF found IS NOT NULL THEN
            RAISE EXCEPTION 'migration V8 (partitioning % by received_at) stops: indexes aurore does not know (%); drop them, migrate, and create them on the new table (an index on a partitioned table covers every partition)', t, found;
        END IF;
        EXECUTE format('SELECT max(received_at)::text FROM %I WHERE received_at > now() + interval ''100 years''', t) INTO found;
        IF found IS NOT NULL THEN
            RAISE EXCEPTION 'migration V8 (partitioning % by received_at) stops: rows received at % fit no time partition; correct their received_at first', t, found;
        END IF;
    END LOOP;
END
$$;

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
    upto timestamptz := date_trunc('day', now()) + interval '2 days';
    name text;
    g record;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'dead_letters'] LOOP
        -- Whoever was granted the old table keeps the same rights on the new one, granted by the
        -- same grantor, with the grant option where it was given.
        FOR g IN SELECT a.privilege_type, a.is_grantable,
                        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee,
                        pg_get_userbyid(a.grantor) AS grantor
                   FROM pg_class c, aclexplode(c.relacl) a
                  WHERE c.oid = (t || '_before_partitioning')::regclass AND a.grantee <> c.relowner LOOP
            EXECUTE format('GRANT %s ON %I TO %s%s GRANTED BY %I', g.privilege_type, t, g.grantee,
                           CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END, g.grantor);
        END LOOP;
        EXECUTE format('SELECT max(received_at) FROM %I', t || '_before_partitioning') INTO bound;
        IF bound IS NULL THEN
            EXECUTE format('DROP TABLE %I', t || '_before_partitioning');
            bound := date_trunc('day', now());
        ELSE
            bound := greatest(bound, now()) + interval '1 microsecond';
            -- The parent's key includes received_at: ATTACH builds its index on the old rows.
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', t || '_before_partitioning', t || '_before_partitioning_pkey');
            EXECUTE format('COMMENT ON TABLE %I IS %L', t || '_before_partitioning', 'aurore: partition of ' || t);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',
                           t, t || '_before_partitioning', bound);
        END IF;
        -- From there through tomorrow (UTC), named as aurore names its own (src/partitions.rs): an
        -- older aurore still running (a rolling upgrade) stores its next rows there, and a new one
        -- creates its partitions after it.
        name := t || '_p' || to_char(bound, 'YYYYMMDD"t"HH24MISS')
                || CASE WHEN extract(microseconds FROM bound)::int8 % 1000000 = 0 THEN ''
                        ELSE '_' || lpad((extract(microseconds FROM bound)::int8 % 1000000)::text, 6, '0') END;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', name, t, bound, upto);
        EXECUTE format('COMMENT ON TABLE %I IS %L', name, 'aurore: partition of ' || t);
    END LOOP;
END
$$;
