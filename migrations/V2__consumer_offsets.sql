-- The source of truth for where each partition resumes: written in the same transaction as
-- the rows it covers, and fenced (UPDATE ... WHERE next_offset = <expected>), so two
-- instances can never both persist the same messages. Kafka's committed offsets follow it.
CREATE TABLE consumer_offsets (
    group_id     text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    next_offset  bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
