-- What a dead letter needs to be acted on (aurore dead-letters): the value's whole size (raw
-- keeps at most 64 KiB of it), the message key, and Kafka's timestamp (an event without
-- "timestamp" takes it, on replay as when it was read). NULL in rows stored before V7: a replay
-- takes received_at for the timestamp, and a row whose raw may be cut is not replayed.
ALTER TABLE dead_letters
    ADD COLUMN size            integer,
    ADD COLUMN message_key     bytea,
    ADD COLUMN kafka_timestamp timestamptz;

-- Dead letters by (topic, reason): stored now, and replayed or purged ever; kept in the same
-- transactions as the rows, so the metrics never count the table.
CREATE TABLE dead_letter_counts (
    topic     text   NOT NULL,
    reason    text   NOT NULL,
    stored    bigint NOT NULL DEFAULT 0,
    replayed  bigint NOT NULL DEFAULT 0,
    purged    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, reason)
);

INSERT INTO dead_letter_counts (topic, reason, stored)
SELECT topic, reason, count(*) FROM dead_letters GROUP BY topic, reason;
