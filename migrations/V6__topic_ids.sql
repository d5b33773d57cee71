-- Kafka's id of each topic whose positions are stored (KIP-516). A topic deleted and created
-- again under the same name gets a new id: its stored rows and positions belong to the older
-- generation, and its partitions are refused until `aurore archive-topic` moves them aside.
-- Recorded the first time aurore reads the topic (adopted as is for topics stored before).
CREATE TABLE topic_ids (
    topic       text        PRIMARY KEY,
    topic_id    text        NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now()
);
