use super::*;

#[test]
fn fences_chain_from_the_stored_offset() {
    let mut t = OffsetTracker::new();
    let e = t.assign("events", 2, Start::Stored(100));
    assert_eq!(t.accept("events", 2, 100), Accept::Take(e));
    assert_eq!(t.accept("events", 2, 101), Accept::Take(e));
    assert_eq!(t.seal("events", 2, e, 102), Some(Fence::At(100)));
    // A gap (transaction marker at 102) is fine: offsets only need to grow; it is flagged.
    assert_eq!(t.accept("events", 2, 103), Accept::Gap { epoch: e, expected: 102 });
    assert_eq!(t.seal("events", 2, e, 104), Some(Fence::At(102)));
}

#[test]
fn a_partition_never_persisted_starts_absent() {
    let mut t = OffsetTracker::new();
    let e = t.assign("events", 0, Start::Kafka);
    assert_eq!(t.accept("events", 0, 7), Accept::Take(e));
    assert_eq!(t.seal("events", 0, e, 8), Some(Fence::Absent));
    assert_eq!(t.seal("events", 0, e, 9), Some(Fence::At(8)));
}

#[test]
fn messages_below_the_position_are_replays() {
    let mut t = OffsetTracker::new();
    let e = t.assign("events", 1, Start::Stored(50));
    assert_eq!(t.accept("events", 1, 49), Accept::Replay { position: 50 });
    assert_eq!(t.accept("events", 1, 50), Accept::Take(e));
    assert_eq!(t.accept("events", 1, 50), Accept::Replay { position: 51 });
}

#[test]
fn a_refused_partition_takes_nothing_but_still_seals() {
    let mut t = OffsetTracker::new();
    let e = t.assign("events", 0, Start::Stored(100));
    assert_eq!(t.accept("events", 0, 100), Accept::Take(e));
    assert!(t.refuse("events", 0));
    assert!(!t.refuse("events", 0), "once");
    assert_eq!(t.accept("events", 0, 101), Accept::NotAssigned);
    assert_eq!(t.seal("events", 0, e, 101), Some(Fence::At(100)), "what was taken is still persisted");
    assert_eq!(t.refused(), vec![(Arc::from("events"), 0)]);
    assert!(t.unresolved().is_empty() && !t.any_resolved());
    // Assigned again (an operator archived the old rows): read from the new start.
    let again = t.assign("events", 0, Start::Kafka);
    assert!(t.refused().is_empty());
    assert_eq!(t.accept("events", 0, 0), Accept::Take(again));
}

#[test]
fn reassignment_bumps_the_epoch_and_stale_seals_fail() {
    let mut t = OffsetTracker::new();
    let old = t.assign("events", 3, Start::Stored(10));
    t.accept("events", 3, 10);
    let new = t.assign("events", 3, Start::Stored(5));
    assert_ne!(old, new);
    assert_eq!(t.seal("events", 3, old, 11), None);
    assert!(!t.is_assigned("events", 3, old));
    assert!(t.is_assigned("events", 3, new));
    assert_eq!(t.accept("events", 3, 5), Accept::Take(new));
}

#[test]
fn revoked_and_unknown_partitions_take_nothing() {
    let mut t = OffsetTracker::new();
    assert_eq!(t.accept("events", 0, 0), Accept::NotAssigned);
    let e = t.assign("events", 0, Start::Stored(0));
    t.revoke("events", 0);
    assert!(!t.any_resolved());
    assert_eq!(t.accept("events", 0, 0), Accept::NotAssigned);
    assert_eq!(t.seal("events", 0, e, 1), None);
    assert_eq!(t.accept("other", 0, 0), Accept::NotAssigned);
}

#[test]
fn unresolved_partitions_wait_for_their_start() {
    let mut t = OffsetTracker::new();
    assert!(!t.any_resolved());
    t.assign("events", 4, Start::Unresolved);
    assert!(!t.any_resolved(), "an unresolved partition gives no messages");
    assert_eq!(t.accept("events", 4, 0), Accept::NotAssigned);
    assert_eq!(t.unresolved().len(), 1);
    let e = t.assign("events", 4, Start::Stored(3));
    assert!(t.unresolved().is_empty());
    assert!(t.any_resolved());
    assert_eq!(t.accept("events", 4, 3), Accept::Take(e));
}

#[test]
fn topics_are_interned() {
    let mut t = OffsetTracker::new();
    let a = t.topic("events").clone();
    let b = t.topic("events").clone();
    assert!(Arc::ptr_eq(&a, &b));
}
