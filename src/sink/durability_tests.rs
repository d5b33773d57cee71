use std::time::{Duration, Instant};

use super::unconfirmed;

#[test]
fn batches_committed_after_the_connection_opened_and_not_short_are_confirmed() {
    let opened = Instant::now();
    let later = opened + Duration::from_millis(5);
    assert!(unconfirmed([later, later].into_iter(), opened, &[], &[0, 0, 1]).is_empty());
}

/// A restart ends every connection: one opened after a commit proves nothing about it.
#[test]
fn a_batch_committed_before_the_connection_opened_is_not_confirmed() {
    let opened = Instant::now();
    let (before, after) = (opened - Duration::from_millis(5), opened + Duration::from_millis(5));
    assert_eq!(unconfirmed([after, before, after].into_iter(), opened, &[], &[0, 1, 2]), [1]);
}

/// Positions are 1-based units; a batch short in several units, or also committed before the
/// connection, is named once, in order.
#[test]
fn short_units_name_their_batches_once_in_order() {
    let opened = Instant::now();
    let (before, after) = (opened - Duration::from_millis(5), opened + Duration::from_millis(5));
    // Units: batch 0 has two, batch 1 one, batch 2 two.
    let batch = [0, 0, 1, 2, 2];
    assert_eq!(unconfirmed([after, after, after].into_iter(), opened, &[4, 5, 1], &batch), [0, 2]);
    assert_eq!(unconfirmed([after, before, after].into_iter(), opened, &[3, 2], &batch), [0, 1]);
}
