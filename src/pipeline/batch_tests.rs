use super::*;
use crate::event::decode;

fn event(json: &str) -> Event<'_> {
    decode(Some(json.as_bytes()), 1 << 20).unwrap()
}

const T0: i64 = 1_714_557_600_000_000; // 2024-05-01T10:00:00Z

#[test]
fn batches_fill_to_size_and_seal_with_fences() {
    let mut b = Batcher::new(2, 3, Duration::from_secs(60));
    let topic: Arc<str> = Arc::from("events");
    let w = b.route(&topic, 1);
    for off in 10..13 {
        let json = r#"{"service":"s","event_type":"t"}"#;
        b.unit(w, &topic, 1, 7).push_event(&event(json), off, T0, uuid::Uuid::nil(), json.len());
    }
    assert!(b.is_full(w));
    let (batch, stale) = b.take(w, |u| (u.epoch == 7).then_some(Fence::At(10)));
    let batch = batch.unwrap();
    assert!(stale.is_empty());
    let u = &batch.units[0];
    assert_eq!((u.fence, u.next_offset, u.row_count(), u.messages), (Fence::At(10), 13, 3, 3));
    assert_eq!(u.counts, vec![Count { service: "s".into(), event_type: "t".into(), hour: T0, n: 3 }]);
    // Row slices decode back to the right offsets.
    let second = u.rows(1, 2);
    assert_eq!(copy::decode_row(&second).unwrap().offset, 11);
    assert_eq!(u.rows(0, 3).len(), u.frozen.len());
    assert!(!b.is_full(w) && b.next_due().is_none());
}

#[test]
fn counts_group_by_service_type_and_event_hour() {
    let mut b = Batcher::new(1, 100, Duration::from_secs(60));
    let topic: Arc<str> = Arc::from("events");
    let evs = [
        r#"{"service":"a","event_type":"x","timestamp":"2024-05-01T10:05:00Z"}"#,
        r#"{"service":"a","event_type":"x","timestamp":"2024-05-01T10:59:59Z"}"#,
        r#"{"service":"a","event_type":"x","timestamp":"2024-05-01T11:00:00Z"}"#,
        r#"{"service":"b","event_type":"x","timestamp":"2024-05-01T10:00:00Z"}"#,
        r#"{"service":"a","event_type":"y"}"#,
    ];
    for (i, json) in evs.iter().enumerate() {
        b.unit(0, &topic, 0, 1).push_event(&event(json), i as i64, T0 + 1, uuid::Uuid::nil(), json.len());
    }
    let (batch, _) = b.take(0, |_| Some(Fence::Absent));
    let mut counts: Vec<_> = batch.unwrap().units[0]
        .counts
        .iter()
        .map(|c| (c.service.to_string(), c.event_type.to_string(), (c.hour - T0) / 3_600_000_000, c.n))
        .collect();
    counts.sort();
    let s = |x: &str| x.to_string();
    assert_eq!(counts, vec![(s("a"), s("x"), 0, 2), (s("a"), s("x"), 1, 1), (s("a"), s("y"), 0, 1), (s("b"), s("x"), 0, 1)]);
}

#[test]
fn dead_letters_take_offsets_and_buffer_bytes() {
    let mut b = Batcher::new(1, 100, Duration::from_millis(10));
    let topic: Arc<str> = Arc::from("events");
    let raw = vec![b'x'; DEAD_LETTER_RAW_LIMIT + 10];
    let invalid = decode(Some(&raw), 1 << 20).unwrap_err();
    b.unit(0, &topic, 0, 1).push_dead(5, Some(&raw), Some(b"k"), Some(7), invalid);
    b.unit(0, &topic, 0, 1).push_dead(6, None, None, None, decode(None, 1).unwrap_err());
    let (batch, _) = b.take(0, |_| Some(Fence::At(5)));
    let u = &batch.unwrap().units[0];
    assert_eq!((u.next_offset, u.messages, u.bytes, u.row_count()), (7, 2, raw.len(), 0));
    assert_eq!(u.dead[0].raw.as_ref().unwrap().len(), raw.len(), "kept whole; the table's insert cuts it");
    assert_eq!(
        (u.dead[0].size as usize, u.dead[0].key.as_deref(), u.dead[0].kafka_timestamp),
        (raw.len(), Some(&b"k"[..]), Some(7))
    );
    assert_eq!(u.dead[1].raw, None);
    assert_eq!(u.dead[1].reason, Reject::Tombstone);
}

#[test]
fn linger_makes_a_batch_due() {
    let mut b = Batcher::new(2, 100, Duration::from_millis(5));
    let topic: Arc<str> = Arc::from("events");
    assert!(b.next_due().is_none());
    let w = b.route(&topic, 0);
    b.unit(w, &topic, 0, 1).push_dead(0, None, None, None, decode(None, 1).unwrap_err());
    let due = b.next_due().unwrap();
    assert!(!b.is_due(w, due - Duration::from_millis(1)));
    assert!(b.is_due(w, due));
}

#[test]
fn stale_units_are_handed_back_and_discard_removes_a_partition() {
    let mut b = Batcher::new(1, 100, Duration::from_secs(1));
    let topic: Arc<str> = Arc::from("events");
    b.unit(0, &topic, 0, 1).push_dead(0, None, None, None, decode(None, 1).unwrap_err());
    b.unit(0, &topic, 1, 2).push_dead(0, None, None, None, decode(None, 1).unwrap_err());
    b.unit(0, &topic, 2, 3).push_dead(0, None, None, None, decode(None, 1).unwrap_err());
    assert_eq!(b.discard("events", 1).unwrap().partition, 1);
    assert!(b.discard("events", 1).is_none());
    let (batch, stale) = b.take(0, |u| (u.epoch != 3).then_some(Fence::Absent));
    assert_eq!(batch.unwrap().units.iter().map(|u| u.partition).collect::<Vec<_>>(), vec![0]);
    assert_eq!(stale.iter().map(|u| u.partition).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn batches_also_fill_at_their_byte_limit() {
    let mut b = Batcher::new(2, 1000, Duration::from_secs(60)).with_batch_bytes(100);
    let topic: Arc<str> = Arc::from("events");
    let w = b.route(&topic, 0);
    let other = b.route(&topic, 1);
    let json = r#"{"service":"s","event_type":"t","payload":{"pad":"0123456789"}}"#;
    let push = |b: &mut Batcher, worker: usize, partition: i32, off: i64| {
        b.unit(worker, &topic, partition, 1).push_event(&event(json), off, T0, uuid::Uuid::nil(), json.len());
        b.add_bytes(worker, json.len());
    };
    push(&mut b, w, 0, 0);
    assert!(!b.is_full(w), "{} bytes of 100", json.len());
    push(&mut b, other, 1, 0);
    assert!(!b.is_full(other), "each worker's batch counts its own bytes");
    push(&mut b, w, 0, 1);
    assert!(b.is_full(w), "{} bytes of 100", 2 * json.len());
    // A discarded unit's bytes leave its batch with it.
    b.discard("events", 0).unwrap();
    assert!(!b.is_full(w));
    push(&mut b, w, 0, 2);
    assert!(!b.is_full(w));
    let (batch, _) = b.take(w, |_| Some(Fence::Absent));
    assert_eq!(batch.unwrap().units[0].bytes, json.len());
    push(&mut b, w, 0, 3);
    assert!(!b.is_full(w), "a sent batch's bytes are not the next one's");
}

#[test]
fn partitions_spread_over_workers() {
    let mut b = Batcher::new(2, 1, Duration::from_secs(1));
    let topic: Arc<str> = Arc::from("events");
    let mut per = [0; 2];
    for p in 0..6 {
        per[b.route(&topic, p)] += 1;
    }
    assert_eq!(per, [3, 3]);
}

/// Routes `partition` and fills its worker's batch (of two) with it, then sends it.
fn send(b: &mut Batcher, topic: &Arc<str>, partition: i32) -> (usize, Batch) {
    let w = b.route(topic, partition);
    let json = r#"{"service":"s","event_type":"t"}"#;
    for off in 0..2 {
        b.unit(w, topic, partition, 1).push_event(&event(json), off, T0, uuid::Uuid::nil(), json.len());
    }
    assert!(b.is_full(w));
    (w, b.take(w, |_| Some(Fence::Absent)).0.unwrap())
}

#[test]
fn a_partition_moves_to_an_idle_worker_only_from_a_backlog_and_after_its_last_batch() {
    let (doing, done) = crate::pipeline::progress::channels(2);
    let mut b = Batcher::new(2, 2, Duration::from_secs(60)).with_progress(done);
    let topic: Arc<str> = Arc::from("events");
    let (w, first) = send(&mut b, &topic, 0);
    let other = 1 - w;
    assert_eq!((first.seq, first.after.as_slice()), (1, &[][..]));
    // One batch at its worker, being persisted: no backlog, the partition stays.
    let (at, second) = send(&mut b, &topic, 0);
    assert_eq!((at, second.seq, b.moves()), (w, 2, 0));
    // A batch waits behind the one being persisted, the other worker has nothing: it moves,
    // and its batch there comes after the partition's last one.
    let (at, third) = send(&mut b, &topic, 0);
    assert_eq!((at, third.seq, third.after.as_slice(), b.moves()), (other, 1, &[(w, 2)][..], 1));
    // While it has a batch at its new worker, it stays there, however busy.
    doing[w].send_replace(2);
    let (at, fourth) = send(&mut b, &topic, 0);
    assert_eq!((at, fourth.seq, fourth.after.as_slice()), (other, 2, &[][..]));
    // A worker that keeps a partition unit open keeps the partition: no unit is split.
    let u = b.route(&topic, 0);
    assert_eq!(b.route(&topic, 0), u);
}

#[test]
fn a_partition_with_nothing_at_any_worker_goes_to_the_least_busy() {
    let (doing, done) = crate::pipeline::progress::channels(2);
    let mut b = Batcher::new(2, 2, Duration::from_secs(60)).with_progress(done);
    let topic: Arc<str> = Arc::from("events");
    let (w, first) = send(&mut b, &topic, 0);
    // Partition 2 starts at the same worker (by name), which is now persisting a batch.
    doing[w].send_replace(first.seq);
    let (w2, busy) = send(&mut b, &topic, 2);
    assert_eq!(w2, w, "a new partition starts where its name puts it when both are idle");
    // Partition 0's batch is done, the worker busy with partition 2's: 0 goes to the other,
    // with nothing to wait for, and no move counted.
    let (at, batch) = send(&mut b, &topic, 0);
    assert_eq!((at, batch.after.as_slice(), b.moves()), (1 - w, &[][..], 0));
    // Both idle again: it stays where it is.
    doing[w].send_replace(busy.seq);
    doing[1 - w].send_replace(batch.seq);
    assert_eq!(send(&mut b, &topic, 0).0, 1 - w);
}

#[test]
fn without_progress_a_partition_keeps_its_worker() {
    let mut b = Batcher::new(2, 2, Duration::from_secs(60));
    let topic: Arc<str> = Arc::from("events");
    let w = send(&mut b, &topic, 0).0;
    for _ in 0..5 {
        assert_eq!(send(&mut b, &topic, 0).0, w);
    }
    assert_eq!(b.moves(), 0);
}

#[test]
fn committed_units_row_buffers_are_reused() {
    let mut b = Batcher::new(1, 2, Duration::from_secs(60));
    let topic: Arc<str> = Arc::from("events");
    let json = r#"{"service":"s","event_type":"t"}"#;
    let fill = |b: &mut Batcher, from: i64| {
        for off in from..from + 2 {
            b.unit(0, &topic, 0, 1).push_event(&event(json), off, T0, uuid::Uuid::nil(), json.len());
        }
        b.take(0, |_| Some(Fence::Absent)).0.unwrap().units.pop().unwrap()
    };
    let first = fill(&mut b, 0);
    let memory = first.frozen.as_ptr();
    // A slice still held (a COPY in progress) keeps the buffer from being reused.
    let held = first.rows(0, 1);
    b.recycle(first.frozen.clone());
    assert_eq!(b.kept_row_buffers(), 0);
    drop(held);
    b.recycle(first.frozen);
    assert_eq!(b.kept_row_buffers(), 1);
    let second = fill(&mut b, 2);
    assert_eq!(second.frozen.as_ptr(), memory, "the next unit writes into the returned buffer");
    assert_eq!(b.kept_row_buffers(), 0);
    assert_eq!(copy::decode_row(&second.rows(1, 2)).unwrap().offset, 3, "it holds only the new rows");
}

#[test]
fn row_buffers_keep_at_most_their_byte_budget() {
    let mut r = RowBuffers::default();
    let buffer = |n: usize| {
        let mut b = BytesMut::with_capacity(n);
        b.extend_from_slice(b"row");
        b.freeze()
    };
    // A unit of large messages grew its buffer past the budget: freed, not kept.
    r.give(buffer(RowBuffers::KEEP_BYTES + 1));
    assert_eq!(r.kept(), 0);
    // Usual buffers are kept until the budget is spent...
    let each = RowBuffers::KEEP_BYTES / 4;
    for _ in 0..5 {
        r.give(buffer(each));
    }
    assert_eq!(r.kept(), 4, "the fifth would pass {} bytes", RowBuffers::KEEP_BYTES);
    // ...and taking one frees its share.
    let taken = r.take(1);
    assert!(taken.capacity() >= each);
    r.give(buffer(each));
    assert_eq!(r.kept(), 4);
}

/// The flush workers of [`partitions_batches_run_in_order_and_no_worker_waits_forever_whatever_the_order_of_events`]:
/// each persists its queue in order, waiting as `sink::worker::after` does.
struct Workers {
    doing: Vec<crate::pipeline::progress::Doing>,
    queues: Vec<std::collections::VecDeque<Batch>>,
    /// Each partition's batches in the order sealed, as (worker, seq, ended), by [`Workers::key`].
    history: Vec<Vec<(usize, u64, bool)>>,
    /// The partitions whose open unit is at another worker than their last batch.
    moved: Vec<bool>,
    /// How often such a unit was discarded or sealed stale: the path that once went wrong.
    moved_then_dropped: usize,
}

impl Workers {
    fn key(u: &Unit) -> usize {
        usize::from(&*u.topic == "b") * 8 + u.partition as usize
    }

    /// Routes a message of `topic`'s `partition` and adds it to its worker's open batch.
    fn message(&mut self, b: &mut Batcher, topic: &Arc<str>, partition: i32, offset: i64) -> usize {
        let json = r#"{"service":"s","event_type":"t"}"#;
        let w = b.route(topic, partition);
        let unit = b.unit(w, topic, partition, 1);
        unit.push_event(&event(json), offset, T0, uuid::Uuid::nil(), json.len());
        let key = Self::key(unit);
        b.add_bytes(w, json.len());
        if self.history[key].last().is_some_and(|&(lw, _, _)| lw != w) {
            self.moved[key] = true;
        }
        w
    }

    /// Seals `w`'s open batch, each unit stale with a chance of 1 in `stale` (never if 0), and
    /// queues it.
    fn seal(&mut self, b: &mut Batcher, w: usize, rng: &mut fastrand::Rng, stale: u8) {
        let (batch, dropped) = b.take(w, |_| (stale == 0 || rng.u8(..stale) != 0).then_some(Fence::Absent));
        for u in &dropped {
            self.dropped(u);
        }
        let Some(batch) = batch else { return };
        for &(aw, s) in &batch.after {
            let sent = *self.doing[aw].borrow() + self.queues[aw].len() as u64;
            assert!(aw != w && s <= sent, "a wait on ({aw}, {s}), a batch not sent");
            // No wait it does not need: one of its partitions' last batch is that one.
            let needed =
                batch.units.iter().any(|u| self.history[Self::key(u)].last().is_some_and(|&(lw, ls, _)| (lw, ls) == (aw, s)));
            assert!(needed, "a wait on ({aw}, {s}) that none of its units needs");
        }
        for u in &batch.units {
            self.history[Self::key(u)].push((w, batch.seq, false));
            self.moved[Self::key(u)] = false;
        }
        self.queues[w].push_back(batch);
    }

    fn dropped(&mut self, u: &Unit) {
        let key = Self::key(u);
        self.moved_then_dropped += usize::from(std::mem::take(&mut self.moved[key]));
    }

    /// Persists the head of `w`'s queue if what it waits for has ended; whether it did.
    fn step(&mut self, w: usize) -> bool {
        let Some(head) = self.queues[w].front() else { return false };
        if head.after.iter().any(|&(aw, s)| *self.doing[aw].borrow() < s) {
            return false;
        }
        let head = self.queues[w].pop_front().unwrap();
        for u in &head.units {
            let h = &mut self.history[Self::key(u)];
            let at = h.iter().position(|&(hw, s, _)| (hw, s) == (w, head.seq)).unwrap();
            assert!(
                h[..at].iter().all(|e| e.2),
                "partition {}'s batch ({w}, {}) began before an earlier one ended: {h:?}",
                u.partition,
                head.seq
            );
            h[at].2 = true;
        }
        self.doing[w].send_replace(head.seq);
        true
    }
}

/// Random routing, filling, sealing (some units stale), discarding and persisting, with two and
/// three workers and one or two topics. Every partition's batches must begin only after its
/// earlier ones ended, no batch may wait on one it does not need, and the workers must never
/// wait on each other. It found a fault: a partition whose unit moved and was then discarded
/// before it was sent kept its old worker's `seq` as if the new one's.
#[test]
fn partitions_batches_run_in_order_and_no_worker_waits_forever_whatever_the_order_of_events() {
    let topics: [Arc<str>; 2] = [Arc::from("a"), Arc::from("b")];
    let mut rng = fastrand::Rng::with_seed(21);
    let (mut moves, mut moved_then_dropped) = (0, 0);
    for round in 0..400 {
        let workers = 2 + round % 2;
        let topics = &topics[..1 + round / 2 % 2];
        let partitions = rng.i32(1..6);
        let (doing, done) = crate::pipeline::progress::channels(workers);
        let mut b = Batcher::new(workers, rng.usize(1..5), Duration::from_secs(60)).with_progress(done);
        let queues = (0..workers).map(|_| Default::default()).collect();
        let mut sim = Workers { doing, queues, history: vec![Vec::new(); 16], moved: vec![false; 16], moved_then_dropped: 0 };
        let mut offset = 0;
        for _ in 0..200 {
            let topic = &topics[rng.usize(..topics.len())];
            match rng.u8(..10) {
                0..=5 => {
                    offset += 1;
                    let w = sim.message(&mut b, topic, rng.i32(0..partitions), offset);
                    if b.is_full(w) {
                        sim.seal(&mut b, w, &mut rng, 8);
                    }
                }
                6 => sim.seal(&mut b, rng.usize(..workers), &mut rng, 8),
                7 => {
                    if let Some(u) = b.discard(topic, rng.i32(0..partitions)) {
                        sim.dropped(&u);
                    }
                }
                _ => drop(sim.step(rng.usize(..workers))),
            }
        }
        for w in 0..workers {
            sim.seal(&mut b, w, &mut rng, 0);
        }
        while (0..workers).any(|w| sim.step(w)) {}
        assert!(sim.queues.iter().all(|q| q.is_empty()), "round {round}: workers wait on each other forever: {:?}", sim.queues);
        moves += b.moves();
        moved_then_dropped += sim.moved_then_dropped;
    }
    assert!(moves > 100, "the rounds moved partitions {moves} times: too few to tell");
    assert!(moved_then_dropped > 20, "a moved partition's unit was dropped {moved_then_dropped} times: too few to tell");
}
