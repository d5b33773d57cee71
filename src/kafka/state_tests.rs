use super::*;
use crate::copy;
use crate::event::Reject;
use crate::pipeline::offsets::Fence;

const HOLD: Duration = Duration::from_secs(1);

fn state(capacity: usize) -> PollerState {
    state_with_progress(capacity, Vec::new())
}

/// Two workers, batches of 3, a linger of an hour; `progress`: the workers' (none: every batch
/// sent counts as done).
fn state_with_progress(capacity: usize, progress: Vec<crate::pipeline::progress::Done>) -> PollerState {
    let settings = Settings {
        workers: 2,
        batch_size: 3,
        linger: Duration::from_secs(3600),
        max_event_bytes: 1 << 20,
        hold_max: HOLD,
        progress,
    };
    PollerState::new(settings, Arc::new(Buffer::new(capacity, 1 << 30, 50)), Arc::new(Metrics::new()))
}

const EVENT: &str = r#"{"service":"s","event_type":"t"}"#;
const WITH_ID: &str = r#"{"id":"7b1a0b8e-7a4e-4c55-9d3b-8f4c7c1f2a10","service":"s","event_type":"t"}"#;

fn msg(partition: i32, offset: i64, json: &'static str) -> Msg<'static> {
    Msg { topic: "events", partition, offset, value: Some(json.as_bytes()), key: None, timestamp_millis: Some(1_714_557_600_000) }
}

fn take(s: &mut PollerState, partition: i32, offsets: std::ops::Range<i64>) {
    let burst: Vec<Msg<'_>> = offsets.map(|o| msg(partition, o, EVENT)).collect();
    s.take(&burst);
}

fn assign(s: &mut PollerState, partition: i32, start: Start) {
    s.assigned(&[("events".to_owned(), partition, start)]);
}

/// The batches sent, and every other command, from the commands pending now.
fn commands(s: &mut PollerState, now: Instant) -> (Vec<Batch>, Vec<Command>) {
    let mut sent = Vec::new();
    let mut other = Vec::new();
    for c in s.take_commands(now) {
        match c {
            Command::Send { batch, .. } => sent.push(batch),
            c => other.push(c),
        }
    }
    (sent, other)
}

fn parts(p: &[i32]) -> Vec<(Arc<str>, i32)> {
    p.iter().map(|&p| (Arc::from("events"), p)).collect()
}

fn persisted(batch: Batch) -> Report {
    Report { units: batch.units, outcome: Outcome::Persisted }
}

#[test]
fn assignment_with_a_stored_start_and_with_none() {
    let mut s = state(100);
    let now = Instant::now();
    s.assigned(&[("events".to_owned(), 0, Start::Stored(5)), ("events".to_owned(), 1, Start::Kafka)]);
    assert!(commands(&mut s, now).1.is_empty(), "nothing to pause or seek: the client assigned at the stored offset");
    assert!(s.reading());
    take(&mut s, 0, 3..6); // 3 and 4 are below the stored start: replays
    take(&mut s, 1, 40..41);
    assert_eq!(s.buffered(), 2);
    s.flush_all();
    let (sent, _) = commands(&mut s, now);
    let fences: Vec<(i32, Fence, i64)> =
        sent.iter().flat_map(|b| &b.units).map(|u| (u.partition, u.fence, u.next_offset)).collect();
    assert!(fences.contains(&(0, Fence::At(5), 6)), "{fences:?}");
    assert!(fences.contains(&(1, Fence::Absent, 41)), "{fences:?}");
    // Kafka follows what PostgreSQL holds, at the next recommit.
    let (_, later) = commands(&mut s, now + crate::kafka::commits::RECOMMIT * 2);
    assert!(matches!(&later[..], [Command::Commit(c)] if c.contains(&(Arc::from("events"), 0, 5))), "{later:?}");
}

#[test]
fn an_unresolved_start_pauses_the_partition_until_postgresql_answers() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 2, Start::Unresolved);
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Pause(p)] if *p == parts(&[2])), "{cmds:?}");
    assert!(!s.reading());
    assert_eq!(s.unresolved(), parts(&[2]));
    take(&mut s, 2, 0..3);
    assert_eq!(s.buffered(), 0, "nothing is taken before the start is known");
    s.resolved("events", 2, Start::Unresolved);
    assert!(commands(&mut s, now).1.is_empty(), "still unknown: still paused");
    s.resolved("events", 2, Start::Stored(7));
    let (_, cmds) = commands(&mut s, now);
    assert!(
        matches!(&cmds[..], [Command::Seek { partition: 2, offset: 7, .. }, Command::Resume(p)] if *p == parts(&[2])),
        "{cmds:?}"
    );
    assert!(s.reading() && s.unresolved().is_empty());
    take(&mut s, 2, 6..8);
    assert_eq!(s.buffered(), 1, "6 is a replay");
    // An answer for a partition that is no longer unresolved changes nothing (the replay of 6
    // asks for a look at the log's bounds, nothing else).
    s.resolved("events", 2, Start::Stored(100));
    assert!(commands(&mut s, now).1.is_empty());
    assert_eq!(s.take_suspects(now).len(), 1, "the replay of 6 asks for a look at the log's bounds");
}

#[test]
fn a_fence_conflict_drops_the_partition_and_resumes_from_postgresql() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(10));
    take(&mut s, 0, 10..13); // a full batch of 3
    take(&mut s, 0, 13..14); // and one in the next, still open
    let (mut sent, _) = commands(&mut s, now);
    assert_eq!(sent.len(), 1);
    assert_eq!(s.buffered(), 4);
    s.completed(Report { units: sent.pop().unwrap().units, outcome: Outcome::Fenced });
    assert_eq!(s.buffered(), 0, "the fenced unit and the open one are dropped");
    assert_eq!(s.in_flight_total(), 0);
    let (sent, cmds) = commands(&mut s, now);
    assert!(sent.is_empty());
    assert!(matches!(&cmds[..], [Command::Pause(p)] if *p == parts(&[0])), "{cmds:?}");
    assert_eq!(s.unresolved(), parts(&[0]));
    take(&mut s, 0, 14..15);
    assert_eq!(s.buffered(), 0, "nothing is taken until PostgreSQL says where the partition stands");
    s.resolved("events", 0, Start::Stored(20));
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Seek { partition: 0, offset: 20, .. }, Command::Resume(_)]), "{cmds:?}");
    take(&mut s, 0, 20..21);
    s.flush_all();
    let (sent, _) = commands(&mut s, now);
    assert_eq!(sent[0].units[0].fence, Fence::At(20), "the next batch fences on what the other consumer stored");
}

/// A batch PostgreSQL acknowledged and then lost in a crash (asynchronous commit,
/// `sink::durability`): nothing of it reaches Kafka, and the partition is read again from where
/// PostgreSQL has it, the lost events included.
#[test]
fn a_commit_postgresql_lost_is_read_again_from_where_it_stands() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(10));
    take(&mut s, 0, 10..13);
    let (mut sent, _) = commands(&mut s, now);
    s.completed(Report { units: sent.pop().unwrap().units, outcome: Outcome::NotDurable });
    assert_eq!((s.buffered(), s.in_flight_total()), (0, 0));
    let commits: Vec<(i32, i64)> = s.final_commits().iter().map(|(_, p, n)| (*p, *n)).collect();
    assert_eq!(commits, [(0, 10)], "nothing of a lost batch is committed to Kafka");
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Pause(p)] if *p == parts(&[0])), "{cmds:?}");
    assert_eq!(s.unresolved(), parts(&[0]));
    s.resolved("events", 0, Start::Stored(10));
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Seek { partition: 0, offset: 10, .. }, Command::Resume(_)]), "{cmds:?}");
}

#[test]
fn a_revocation_waits_for_the_batch_in_flight_and_commits_it() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 1, Start::Kafka);
    take(&mut s, 1, 0..3);
    let (mut sent, _) = commands(&mut s, now);
    let revoked = parts(&[1]);
    assert!(s.in_flight(&revoked));
    assert!(s.commits_of(&revoked).is_empty(), "nothing persisted yet");
    s.completed(persisted(sent.pop().unwrap()));
    assert!(!s.in_flight(&revoked));
    assert_eq!(s.commits_of(&revoked), vec![(Arc::from("events"), 1, 3)], "the revocation commits what was persisted");
    s.revoked(&revoked);
    assert!(s.commits_of(&revoked).is_empty());
    assert!(!s.reading());
    take(&mut s, 1, 3..4);
    assert_eq!(s.buffered(), 0, "a revoked partition takes nothing");
}

#[test]
fn a_revocation_drops_the_open_batch_and_a_late_report_only_frees_its_space() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 1, Start::Kafka);
    take(&mut s, 1, 0..4); // one batch in flight, one message in the open batch
    let (mut sent, _) = commands(&mut s, now);
    s.revoked(&parts(&[1])); // the drain timed out
    assert_eq!(s.buffered(), 3, "the open batch is dropped; the one in flight still holds its space");
    s.completed(persisted(sent.pop().unwrap()));
    assert_eq!((s.buffered(), s.in_flight_total()), (0, 0));
    let (_, cmds) = commands(&mut s, now + crate::kafka::commits::RECOMMIT * 2);
    assert!(cmds.is_empty(), "no commit for a partition no longer ours: {cmds:?}");
}

#[test]
fn a_stale_epoch_completion_records_no_progress() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 3, Start::Stored(0));
    take(&mut s, 3, 0..3);
    let (mut old, _) = commands(&mut s, now);
    // Revoked and assigned again before the old batch reported back.
    s.revoked(&parts(&[3]));
    assign(&mut s, 3, Start::Stored(0));
    s.completed(persisted(old.pop().unwrap()));
    assert_eq!((s.buffered(), s.in_flight_total()), (0, 0), "its space is freed");
    let (_, cmds) = commands(&mut s, now);
    assert!(cmds.is_empty(), "but its offsets are not committed: {cmds:?}");
    assert_eq!(s.commits_of(&parts(&[3])), vec![(Arc::from("events"), 3, 0)], "progress stays what PostgreSQL said");
    take(&mut s, 3, 0..1);
    assert_eq!(s.buffered(), 1, "the new epoch reads from the stored start again");
}

#[test]
fn a_full_buffer_holds_then_pauses_then_resumes_below_the_low_water_mark() {
    let mut s = state(4);
    let t0 = Instant::now();
    s.assigned(&[("events".to_owned(), 0, Start::Stored(0)), ("events".to_owned(), 1, Start::Unresolved)]);
    let _ = commands(&mut s, t0);
    take(&mut s, 0, 0..4);
    assert!(s.full());
    assert_eq!(s.room(256), 0);
    s.tick(t0, false);
    assert_eq!(s.flow(), Flow::Hold);
    let (mut sent, cmds) = commands(&mut s, t0);
    assert!(cmds.is_empty(), "holding pauses nothing: {cmds:?}");
    s.tick(t0 + HOLD, false);
    assert_eq!(s.flow(), Flow::Pause);
    assert!(!s.reading());
    let (_, cmds) = commands(&mut s, t0 + HOLD);
    assert!(matches!(&cmds[..], [Command::Pause(p)] if *p == parts(&[0, 1])), "the whole assignment: {cmds:?}");
    // A partition assigned while paused is paused too.
    assign(&mut s, 2, Start::Kafka);
    let (_, cmds) = commands(&mut s, t0 + HOLD);
    assert!(matches!(&cmds[..], [Command::Pause(p)] if *p == parts(&[2])), "{cmds:?}");
    // Holding, the open batch (the fourth event) went too ([`PollerState::tick`]): with no
    // progress given, every batch sent counts as done, so its worker counts as idle.
    assert_eq!(sent.iter().map(|b| b.units[0].messages).collect::<Vec<_>>(), vec![3, 1]);
    s.completed(persisted(sent.remove(0))); // 3 of 4 freed: 1 left, below 50 %
    s.tick(t0 + HOLD * 2, false);
    assert_eq!(s.flow(), Flow::Fetch);
    let (_, cmds) = commands(&mut s, t0 + HOLD * 2);
    let resumed: Vec<&Command> = cmds.iter().filter(|c| matches!(c, Command::Resume(_))).collect();
    assert!(matches!(&resumed[..], [Command::Resume(p)] if *p == parts(&[0, 2])), "not the unresolved one: {cmds:?}");
    assert!(s.reading());
}

#[test]
fn an_open_breaker_pauses_at_once() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 0, Start::Kafka);
    s.tick(now, true);
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Pause(_)]), "{cmds:?}");
    s.tick(now, false);
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Resume(_)]), "{cmds:?}");
}

#[test]
fn ids_are_derived_only_for_events_without_one() {
    let mut s = state(100);
    assign(&mut s, 0, Start::Kafka);
    s.take(&[msg(0, 0, EVENT), msg(0, 1, WITH_ID), msg(0, 2, EVENT)]);
    let (sent, _) = commands(&mut s, Instant::now());
    let unit = &sent[0].units[0];
    let ids: Vec<uuid::Uuid> = (0..3).map(|r| copy::decode_row(&unit.rows(r, r + 1)).unwrap().id).collect();
    assert_eq!(ids[0], event::derived_id("events", 0, 0));
    assert_eq!(ids[1], uuid::Uuid::parse_str("7b1a0b8e-7a4e-4c55-9d3b-8f4c7c1f2a10").unwrap());
    assert_eq!(ids[2], event::derived_id("events", 0, 2), "the id after one carried in the message is the right one");
}

#[test]
fn linger_sends_a_batch_and_bad_input_is_a_dead_letter() {
    let settings = Settings {
        workers: 1,
        batch_size: 100,
        linger: Duration::from_millis(10),
        max_event_bytes: 1 << 20,
        hold_max: HOLD,
        progress: Vec::new(),
    };
    let mut s = PollerState::new(settings, Arc::new(Buffer::new(100, 1 << 30, 50)), Arc::new(Metrics::new()));
    let t0 = Instant::now();
    assign(&mut s, 0, Start::Kafka);
    s.take(&[msg(0, 0, "not json"), msg(0, 1, EVENT)]);
    let due = s.next_due().unwrap();
    s.tick(due - Duration::from_millis(1), false);
    assert!(commands(&mut s, t0).0.is_empty());
    s.tick(due, false);
    let (sent, _) = commands(&mut s, t0);
    let unit = &sent[0].units[0];
    assert_eq!((unit.row_count(), unit.dead.len(), unit.next_offset), (1, 1, 2));
}

// ---------------------------------------------------------------------------------------------
// Adversarial review: probes of the restructured core (all pass: behaviour checked correct).

fn rows_of(batches: &[Batch]) -> Vec<(i32, i64, uuid::Uuid)> {
    let mut out = Vec::new();
    for b in batches {
        for u in &b.units {
            for r in 0..u.row_count() {
                let bytes = u.rows(r, r + 1);
                let row = copy::decode_row(&bytes).unwrap();
                out.push((u.partition, row.offset, row.id));
            }
        }
    }
    out
}

#[test]
fn review_every_derived_id_is_its_own_messages_in_a_mixed_burst() {
    let mut s = state(1000);
    assign(&mut s, 0, Start::Stored(2));
    assign(&mut s, 1, Start::Kafka);
    assign(&mut s, 2, Start::Unresolved);
    let _ = commands(&mut s, Instant::now());
    let burst = [
        msg(0, 0, EVENT),      // replay
        msg(0, 2, EVENT),      // derived
        msg(5, 0, EVENT),      // not assigned
        msg(1, 10, WITH_ID),   // carried
        msg(0, 3, "not json"), // dead letter
        msg(2, 7, EVENT),      // unresolved
        msg(0, 4, EVENT),
        msg(1, 11, EVENT),
        msg(0, 5, WITH_ID),
        msg(0, 6, EVENT),
        msg(1, 12, EVENT),
        msg(1, 13, EVENT),
        msg(0, 7, EVENT),
        msg(1, 12, EVENT), // replay
        msg(1, 14, EVENT),
        msg(0, 8, EVENT),
    ];
    s.take(&burst);
    s.flush_all();
    let (sent, _) = commands(&mut s, Instant::now());
    let rows = rows_of(&sent);
    let carried = uuid::Uuid::parse_str("7b1a0b8e-7a4e-4c55-9d3b-8f4c7c1f2a10").unwrap();
    assert_eq!(rows.len(), 11, "{rows:?}");
    for (p, o, id) in rows {
        let with_id = (p == 1 && o == 10) || (p == 0 && o == 5);
        let want = if with_id { carried } else { event::derived_id("events", p, o) };
        assert_eq!(id, want, "partition {p} offset {o}");
    }
    assert_eq!(s.buffered(), 12);
}

#[test]
fn review_two_fenced_batches_of_one_partition_release_everything_once() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(0));
    take(&mut s, 0, 0..7); // two batches in flight, one message open
    let (sent, _) = commands(&mut s, now);
    assert_eq!(sent.len(), 2);
    let mut sent = sent.into_iter();
    let (first, second) = (sent.next().unwrap(), sent.next().unwrap());
    s.completed(Report { units: first.units, outcome: Outcome::Fenced });
    assert_eq!(s.buffered(), 3, "the second batch still holds its space");
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Pause(_)]), "{cmds:?}");
    s.completed(Report { units: second.units, outcome: Outcome::Fenced });
    assert_eq!((s.buffered(), s.in_flight_total()), (0, 0));
    let (_, cmds) = commands(&mut s, now);
    assert!(cmds.is_empty(), "a stale fence conflict changes nothing: {cmds:?}");
    s.resolved("events", 0, Start::Stored(3));
    let _ = commands(&mut s, now);
    take(&mut s, 0, 3..6);
    let (sent, _) = commands(&mut s, now);
    assert_eq!(sent[0].units[0].fence, Fence::At(3));
}

#[test]
fn review_resolved_while_back_pressure_pauses_is_resumed_when_it_ends() {
    let mut s = state(4);
    let t0 = Instant::now();
    assign(&mut s, 0, Start::Stored(0));
    assign(&mut s, 1, Start::Stored(0));
    take(&mut s, 0, 0..3);
    let (mut sent, _) = commands(&mut s, t0);
    s.completed(Report { units: sent.pop().unwrap().units, outcome: Outcome::Fenced });
    let _ = commands(&mut s, t0);
    take(&mut s, 1, 0..4); // full
    s.tick(t0, false);
    s.tick(t0 + HOLD, false);
    let (mut sent, cmds) = commands(&mut s, t0 + HOLD);
    assert!(matches!(&cmds[..], [Command::Pause(p)] if p.len() == 2), "{cmds:?}");
    s.resolved("events", 0, Start::Stored(9));
    let (_, cmds) = commands(&mut s, t0 + HOLD);
    assert!(matches!(&cmds[..], [Command::Seek { offset: 9, .. }]), "no resume while paused: {cmds:?}");
    s.completed(persisted(sent.remove(0)));
    s.tick(t0 + HOLD * 2, false);
    let (_, cmds) = commands(&mut s, t0 + HOLD * 2);
    let resumed: Vec<&Command> = cmds.iter().filter(|c| matches!(c, Command::Resume(_))).collect();
    assert!(matches!(&resumed[..], [Command::Resume(p)] if *p == parts(&[0, 1])), "{cmds:?}");
}

#[test]
fn review_a_failed_seek_pauses_again_and_resolves_again() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 0, Start::Unresolved);
    let _ = commands(&mut s, now);
    s.resolved("events", 0, Start::Stored(5));
    let _ = commands(&mut s, now);
    let topic = s.tracker.topic("events").clone();
    s.seek_failed(&topic, 0);
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Pause(_)]), "{cmds:?}");
    assert_eq!(s.unresolved(), parts(&[0]));
    take(&mut s, 0, 5..6);
    assert_eq!(s.buffered(), 0);
    s.resolved("events", 0, Start::Stored(5));
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Seek { offset: 5, .. }, Command::Resume(_)]), "{cmds:?}");
    take(&mut s, 0, 5..8);
    let (sent, _) = commands(&mut s, now);
    assert_eq!(sent[0].units[0].fence, Fence::At(5));
}

#[test]
fn review_a_late_fence_conflict_after_revocation_changes_nothing() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(0));
    take(&mut s, 0, 0..3);
    let (mut sent, _) = commands(&mut s, now);
    s.revoked(&parts(&[0]));
    s.completed(Report { units: sent.pop().unwrap().units, outcome: Outcome::Fenced });
    let (_, cmds) = commands(&mut s, now + crate::kafka::commits::RECOMMIT * 2);
    assert!(cmds.is_empty(), "{cmds:?}");
    assert!(s.unresolved().is_empty(), "a revoked partition is not resurrected as unresolved");
    assert_eq!((s.buffered(), s.in_flight_total()), (0, 0));
}

#[test]
fn review_old_epoch_persisted_after_a_fence_and_resolve_records_nothing() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(0));
    take(&mut s, 0, 0..6);
    let (sent, _) = commands(&mut s, now);
    let mut sent = sent.into_iter();
    let (first, second) = (sent.next().unwrap(), sent.next().unwrap());
    s.completed(Report { units: first.units, outcome: Outcome::Fenced });
    s.resolved("events", 0, Start::Stored(3));
    let _ = commands(&mut s, now);
    s.completed(persisted(second));
    let (_, cmds) = commands(&mut s, now);
    assert!(cmds.is_empty(), "{cmds:?}");
    assert_eq!(s.commits_of(&parts(&[0])), vec![(Arc::from("events"), 0, 3)]);
}

#[test]
fn an_assignment_over_an_open_unit_drops_it_instead_of_mixing_epochs() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(0));
    take(&mut s, 0, 0..2); // an open unit of the first epoch
    assign(&mut s, 0, Start::Stored(0)); // assigned again without a revocation
    assert_eq!(s.buffered(), 0, "the old epoch's open unit is dropped, its space freed");
    take(&mut s, 0, 0..3);
    let (sent, _) = commands(&mut s, now);
    let u = &sent[0].units[0];
    assert_eq!(
        (u.fence, u.next_offset, u.row_count()),
        (Fence::At(0), 3, 3),
        "the new epoch's messages are sealed, not dropped as stale"
    );
}

#[test]
fn transaction_markers_after_the_last_message_are_moved_past() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(10));
    assign(&mut s, 1, Start::Kafka);
    assign(&mut s, 2, Start::Unresolved);
    let _ = commands(&mut s, now);
    take(&mut s, 0, 10..12);
    let positions = |p: &[(i32, i64)]| p.iter().map(|&(p, n)| ("events".to_owned(), p, n)).collect::<Vec<_>>();
    // The first look after an assignment is not trusted: librdkafka may still report the
    // position of the partition's previous assignment.
    s.positions(&positions(&[(0, 50)]));
    s.flush_all();
    let (sent, _) = commands(&mut s, now);
    assert!(sent.iter().flat_map(|b| &b.units).all(|u| u.next_offset == 12), "a fresh position moved nothing");
    s.completed(persisted(sent.into_iter().next().unwrap()));
    let _ = commands(&mut s, now);
    // librdkafka's positions: partition 0 past a marker at 12; partition 1 has taken nothing (a
    // position then proves nothing); partition 2's start is unknown.
    s.positions(&positions(&[(0, 13), (1, 7), (2, 9)]));
    assert_eq!(s.buffered(), 0, "a marker is no message");
    s.flush_all();
    let (sent, _) = commands(&mut s, now);
    let units: Vec<(i32, Fence, i64, usize)> =
        sent.iter().flat_map(|b| &b.units).map(|u| (u.partition, u.fence, u.next_offset, u.messages)).collect();
    assert_eq!(units, [(0, Fence::At(12), 13, 0)]);
    s.completed(persisted(sent.into_iter().next().unwrap()));
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Commit(c)] if *c == [(Arc::from("events"), 0, 13)]), "{cmds:?}");

    // Only markers since: a unit of no message carries the progress, from the fence on.
    s.positions(&positions(&[(0, 13)]));
    s.flush_all();
    assert!(commands(&mut s, now).0.is_empty(), "the same position again: nothing to do");
    s.positions(&positions(&[(0, 15)]));
    s.flush_all();
    let (sent, _) = commands(&mut s, now);
    let units: Vec<(i32, Fence, i64, usize)> =
        sent.iter().flat_map(|b| &b.units).map(|u| (u.partition, u.fence, u.next_offset, u.messages)).collect();
    assert_eq!(units, [(0, Fence::At(13), 15, 0)]);
    // Messages after the markers continue from there; a replay below it is still dropped.
    take(&mut s, 0, 14..16);
    assert_eq!(s.buffered(), 1);
}

/// One worker, batches of 100, and the metrics it writes to.
fn with_metrics() -> (PollerState, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let settings = Settings {
        workers: 1,
        batch_size: 100,
        linger: Duration::from_secs(3600),
        max_event_bytes: 1 << 20,
        hold_max: HOLD,
        progress: Vec::new(),
    };
    (PollerState::new(settings, Arc::new(Buffer::new(1000, 1 << 30, 50)), metrics.clone()), metrics)
}

fn suspects(s: &mut PollerState, now: Instant) -> Vec<Suspect> {
    s.take_suspects(now)
}

#[test]
fn a_gap_below_the_log_start_is_counted_as_lost_and_reading_goes_on() {
    let (mut s, metrics) = with_metrics();
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(1000));
    // librdkafka found 1000 out of range and reset to the log start, 3000.
    take(&mut s, 0, 3000..3002);
    assert_eq!(s.buffered(), 2, "taken, not held back");
    let _ = commands(&mut s, now);
    let found = suspects(&mut s, now);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, Oddity::Gap { expected: 1000, got: 3000 });
    s.bounds(&found[0], 3000, 3002);
    assert_eq!(metrics.kafka_offsets_lost_total.with_label_values(&["events", "0"]).get(), 2000);
    // A marker's gap within the log is no loss; and a partition is looked at once per 10 s.
    take(&mut s, 0, 3003..3004);
    assert!(suspects(&mut s, now).is_empty(), "looked at less than 10 s ago");
    let found = suspects(&mut s, now + CHECK_BOUNDS_EVERY);
    assert_eq!(found[0].kind, Oddity::Gap { expected: 3002, got: 3003 });
    s.bounds(&found[0], 3000, 3004);
    assert_eq!(metrics.kafka_offsets_lost_total.with_label_values(&["events", "0"]).get(), 2000);
}

#[test]
fn a_stored_position_beyond_the_log_end_refuses_the_partition_until_archived() {
    let (mut s, metrics) = with_metrics();
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(1000));
    // The topic was created again: librdkafka reset to its start, 0; nothing is taken.
    take(&mut s, 0, 0..5);
    assert_eq!(s.buffered(), 0);
    let _ = commands(&mut s, now);
    let found = suspects(&mut s, now);
    assert_eq!(found[0].kind, Oddity::Replay { position: 1000, got: 0 });
    s.bounds(&found[0], 0, 5);
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Pause(p)] if *p == parts(&[0])), "{cmds:?}");
    assert_eq!(metrics.kafka_partitions_refused.get(), 1);
    assert_eq!(s.refused(), parts(&[0]));
    take(&mut s, 0, 1000..1001);
    assert_eq!(s.buffered(), 0, "a refused partition takes nothing");
    // Its stored position is never committed to Kafka meanwhile.
    let (_, later) = commands(&mut s, now + crate::kafka::commits::RECOMMIT * 2);
    assert!(later.iter().all(|c| !matches!(c, Command::Commit(_))), "{later:?}");
    // Still stored beyond the end: still refused. Archived (no row): read from the log start.
    s.recheck("events", 0, Start::Stored(1000), 0, 7);
    assert_eq!(s.refused(), parts(&[0]));
    // The new log has grown past the stored position: still the old topic's position.
    s.recheck("events", 0, Start::Stored(1000), 0, 1500);
    assert_eq!(s.refused(), parts(&[0]));
    s.recheck("events", 0, Start::Kafka, 0, 7);
    let (_, cmds) = commands(&mut s, now);
    // Kafka's committed offset moves to the new log's start at once (it may hold the old one).
    assert!(
        matches!(&cmds[..], [Command::Seek { partition: 0, offset: 0, .. }, Command::Resume(p), Command::Commit(c)]
            if *p == parts(&[0]) && *c == [(Arc::from("events"), 0, 0)]),
        "{cmds:?}"
    );
    assert_eq!(metrics.kafka_partitions_refused.get(), 0);
    take(&mut s, 0, 0..3);
    assert_eq!(s.buffered(), 3);
}

#[test]
fn a_replay_under_a_position_within_the_log_refuses_nothing() {
    let mut s = state(100);
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(10));
    take(&mut s, 0, 9..10);
    let found = suspects(&mut s, now);
    s.bounds(&found[0], 0, 50);
    assert!(s.refused().is_empty());
    take(&mut s, 0, 10..11);
    assert_eq!(s.buffered(), 1);
}

#[test]
fn a_topic_created_again_is_refused_from_its_assignment() {
    let (mut s, metrics) = with_metrics();
    let now = Instant::now();
    s.assigned(&[("events".to_owned(), 0, Start::Recreated), ("events".to_owned(), 1, Start::Stored(4))]);
    let (_, cmds) = commands(&mut s, now);
    assert!(matches!(&cmds[..], [Command::Pause(p)] if *p == parts(&[0])), "{cmds:?}");
    assert_eq!((metrics.kafka_partitions_refused.get(), s.refused()), (1, parts(&[0])));
    take(&mut s, 0, 0..3);
    take(&mut s, 1, 4..5);
    assert_eq!(s.buffered(), 1, "only the other partition is read");
    // The buffer fills and empties: the refused partition is not resumed with the others.
    s.tick(now, true);
    s.tick(now + HOLD * 3, false);
    let (_, cmds) = commands(&mut s, now);
    assert!(cmds.iter().all(|c| !matches!(c, Command::Resume(p) if p.contains(&(Arc::from("events"), 0)))), "{cmds:?}");
    // Still created again on a second look; archived, then read from the log start.
    s.recheck("events", 0, Start::Recreated, 0, 3);
    assert_eq!(s.refused(), parts(&[0]));
    s.recheck("events", 0, Start::Kafka, 0, 3);
    assert!(s.refused().is_empty() && metrics.kafka_partitions_refused.get() == 0);
}

#[test]
fn a_unit_persisted_after_its_partition_was_refused_commits_nothing_to_kafka() {
    let (mut s, _) = with_metrics();
    let now = Instant::now();
    assign(&mut s, 0, Start::Stored(1000));
    take(&mut s, 0, 1000..1002);
    s.flush_all();
    let (sent, _) = commands(&mut s, now);
    // Refused while the unit is at a worker (the topic was created again meanwhile).
    take(&mut s, 0, 0..1);
    let found = suspects(&mut s, now);
    s.bounds(&found[0], 0, 1);
    let _ = commands(&mut s, now);
    s.completed(persisted(sent.into_iter().next().unwrap()));
    let (_, cmds) = commands(&mut s, now + crate::kafka::commits::RECOMMIT * 2);
    assert!(cmds.iter().all(|c| !matches!(c, Command::Commit(_))), "{cmds:?}");
    assert_eq!(s.buffered(), 0, "its buffer space is free all the same");
}

#[test]
fn an_event_without_a_time_of_its_own_needs_a_kafka_timestamp_in_range() {
    let mut s = state(100);
    assign(&mut s, 0, Start::Kafka);
    const TIMED: &str = r#"{"service":"s","event_type":"t","timestamp":"2026-01-01T00:00:00Z"}"#;
    let at = |offset, json: &'static str, millis| Msg { timestamp_millis: Some(millis), ..msg(0, offset, json) };
    // Microseconds and nanoseconds where milliseconds belong; and the edges of the range.
    let burst = [
        at(0, EVENT, 1_714_557_600_000_000),
        at(1, EVENT, i64::MAX),
        at(2, EVENT, i64::MIN),
        at(3, TIMED, i64::MAX),
        at(4, EVENT, crate::event::MAX_TIMESTAMP_MICROS / 1000),
        at(5, EVENT, crate::event::MIN_TIMESTAMP_MICROS / 1000 - 1),
    ];
    s.take(&burst);
    s.flush_all();
    let (sent, _) = commands(&mut s, Instant::now());
    let dead: Vec<(i64, Reject, Option<i64>)> =
        sent.iter().flat_map(|b| &b.units).flat_map(|u| &u.dead).map(|d| (d.offset, d.reason, d.kafka_timestamp)).collect();
    let none = None;
    assert_eq!(
        dead,
        [
            (0, Reject::TimestampOutOfRange, none),
            (1, Reject::TimestampOutOfRange, none),
            (2, Reject::TimestampOutOfRange, none),
            (5, Reject::TimestampOutOfRange, none)
        ]
    );
    let rows: usize = sent.iter().flat_map(|b| &b.units).map(|u| u.row_count()).sum();
    assert_eq!(rows, 2, "its own timestamp, and the last millisecond in range, are stored");
}

#[test]
fn a_full_buffer_sends_an_idle_workers_open_batch_at_once_and_a_busy_workers_when_it_is_done() {
    let (doing, done) = crate::pipeline::progress::channels(2);
    let mut s = state_with_progress(6, done);
    let t0 = Instant::now();
    s.assigned(&[("events".to_owned(), 0, Start::Stored(0)), ("events".to_owned(), 1, Start::Stored(0))]);
    let _ = commands(&mut s, t0);
    let sends = |s: &mut PollerState| -> Vec<(usize, Vec<i32>)> {
        s.take_commands(t0)
            .into_iter()
            .filter_map(|c| match c {
                Command::Send { worker, batch } => Some((worker, batch.units.iter().map(|u| u.partition).collect())),
                _ => None,
            })
            .collect()
    };
    take(&mut s, 0, 0..3);
    let first = sends(&mut s);
    let [(busy, ref p)] = first[..] else { panic!("one full batch: {first:?}") };
    assert_eq!(p, &[0]);
    take(&mut s, 1, 0..1);
    take(&mut s, 0, 3..4);
    s.tick(t0, false);
    assert!(sends(&mut s).is_empty(), "room left: the open batches wait for the linger");
    s.tick(t0, true);
    assert!(sends(&mut s).is_empty(), "the breaker open (PostgreSQL down): they wait for the linger too");
    assert!(!s.full());
    // Partition 0 stays with the busy worker (its batch is not done); partition 1 went to the
    // other, idle worker.
    take(&mut s, 1, 1..2);
    assert!(s.full());
    s.tick(t0, false);
    assert_eq!(s.flow(), Flow::Hold);
    let idle = 1 - busy;
    assert_eq!(sends(&mut s), vec![(idle, vec![1])], "the idle worker's open batch, not the busy one's");
    s.tick(t0, false);
    assert!(sends(&mut s).is_empty(), "nothing open at the idle worker, the other still busy");
    doing[busy].send_replace(1);
    s.tick(t0, false);
    assert_eq!(sends(&mut s), vec![(busy, vec![0])], "done: its open batch goes too");
}
