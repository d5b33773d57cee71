//! Every SQL text of the batch transaction, in one place. The COPY statement's column list is
//! [`copy::COPY_EVENTS`](crate::copy::COPY_EVENTS), beside the encoder whose field order it must
//! match.

/// Moves each listed partition from its fence (`expected`) to `next_offset`; returns the
/// partitions moved. A partition whose row holds anything else is not moved: someone else (a
/// member of this group or of any other: the row is the partition's, V5) moved it on. Locks the
/// rows until the transaction ends, so a zombie and the new owner serialise. `$1` group (recorded
/// as the last writer), `$2` topics, `$3` partitions, `$4` expected, `$5` next offsets.
pub const MOVE_OFFSETS: &str = "UPDATE consumer_offsets AS o SET next_offset = u.next_offset, group_id = $1, updated_at = now()
     FROM unnest($2::text[], $3::int4[], $4::int8[], $5::int8[]) AS u(topic, partition, expected, next_offset)
     WHERE o.topic = u.topic AND o.partition = u.partition AND o.next_offset = u.expected
     RETURNING o.topic, o.partition";

/// Records partitions persisted for the first time; returns those recorded (a row that already
/// exists means someone else got there first). `$1` group, `$2` topics, `$3` partitions, `$4`
/// next offsets.
pub const INSERT_OFFSETS: &str = "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
     SELECT $1, u.topic, u.partition, u.next_offset FROM unnest($2::text[], $3::int4[], $4::int8[]) AS u(topic, partition, next_offset)
     ON CONFLICT (topic, partition) DO NOTHING RETURNING topic, partition";

/// `$1` topics, `$2` partitions, `$3` offsets, `$4` raw messages, `$5` reasons, `$6` details,
/// `$7` sizes (bytes), `$8` keys, `$9` Kafka timestamps (Unix microseconds). Counted by
/// (topic, reason) in dead_letter_counts by the same statement.
pub const INSERT_DEAD_LETTERS: &str = "WITH stored AS (
       INSERT INTO dead_letters (topic, partition, \"offset\", raw, reason, detail, size, message_key, kafka_timestamp)
       SELECT u.topic, u.partition, u.offset, u.raw, u.reason, u.detail, u.size, u.key,
              timestamptz 'epoch' + u.ts * interval '1 microsecond'
       FROM unnest($1::text[], $2::int4[], $3::int8[], $4::bytea[], $5::text[], $6::text[], $7::int4[], $8::bytea[], $9::int8[])
            AS u(topic, partition, \"offset\", raw, reason, detail, size, key, ts)
       RETURNING topic, reason)
     INSERT INTO dead_letter_counts AS c (topic, reason, stored)
     SELECT topic, reason, count(*) FROM stored GROUP BY topic, reason ORDER BY topic, reason
     ON CONFLICT (topic, reason) DO UPDATE SET stored = c.stored + EXCLUDED.stored";

/// Adds to the hourly counts. `$1` services, `$2` event types, `$3` hours (Unix microseconds),
/// `$4` counts.
pub const UPSERT_COUNTS: &str = "INSERT INTO event_counts (service, event_type, hour, events)
     SELECT u.service, u.event_type, timestamptz 'epoch' + u.hour * interval '1 microsecond', u.n
     FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS u(service, event_type, hour, n)
     ON CONFLICT (service, event_type, hour) DO UPDATE SET events = event_counts.events + EXCLUDED.events";

/// Confirms asynchronously committed batches ([`durability`](super::durability)), run alone in
/// its own implicit transaction. A transactional logical message (an empty one, prefix
/// `aurore.durable`; logical decoding clients see it) gives that transaction a transaction id
/// and a WAL record of its own, which together make its COMMIT wait for the WAL flush past it,
/// and so past every commit before it (`txid_current()` alone does not: PostgreSQL flushes at
/// commit only for a transaction that wrote WAL, `RecordTransactionCommit` in xact.c). Returns
/// the message's LSN and the 1-based positions (ascending) of the listed partitions that
/// `consumer_offsets` holds short of their `next_offset`, or not at all. A session whose
/// `synchronous_commit` is `off` (the role's or the database's setting) gets `on` for this
/// transaction: any other value waits for the local flush at least. `$1` topics, `$2`
/// partitions, `$3` next offsets.
pub const CONFIRM_DURABLE: &str = "SELECT pg_logical_emit_message(true, 'aurore.durable', ''),
       ARRAY(
       SELECT u.i FROM unnest($1::text[], $2::int4[], $3::int8[]) WITH ORDINALITY AS u(topic, partition, next_offset, i)
       WHERE NOT EXISTS (SELECT 1 FROM consumer_offsets o
                         WHERE o.topic = u.topic AND o.partition = u.partition AND o.next_offset >= u.next_offset)
       ORDER BY u.i),
       CASE WHEN current_setting('synchronous_commit') = 'off' THEN set_config('synchronous_commit', 'on', true) END";

/// Makes a batch's COMMIT return without waiting for its WAL flush; the flush is waited for by
/// [`CONFIRM_DURABLE`], once for every batch committed meanwhile.
pub const ASYNCHRONOUS_COMMIT: &str = "SET LOCAL synchronous_commit = off";
