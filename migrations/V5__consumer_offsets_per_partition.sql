-- Where a partition resumes belongs to the partition, not to the consumer group: a message's
-- identity in events and dead_letters is (topic, partition, offset) whichever group stored it.
-- Keyed by group, a renamed group (or a second deployment) started again from the earliest
-- offset and collided with the rows already stored. One row per partition, fenced as before,
-- also makes two groups running at once on one database exclude each other.
--
-- Rows of several groups for one partition: the furthest one wins (every offset below it is
-- stored, by one group or another).
DELETE FROM consumer_offsets o
 USING consumer_offsets k
 WHERE o.topic = k.topic AND o.partition = k.partition
   AND (o.next_offset < k.next_offset OR (o.next_offset = k.next_offset AND o.group_id > k.group_id));
ALTER TABLE consumer_offsets DROP CONSTRAINT consumer_offsets_pkey;
ALTER TABLE consumer_offsets ADD PRIMARY KEY (topic, partition);
COMMENT ON COLUMN consumer_offsets.group_id IS 'the consumer group whose transaction last moved next_offset';
