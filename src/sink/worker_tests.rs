use std::time::Duration;

use super::after;
use crate::pipeline::progress;

/// Whether `after` is still waiting a (virtual) second later.
async fn waits(progress: &[progress::Done], on: &[(usize, u64)]) -> bool {
    tokio::time::timeout(Duration::from_secs(1), after(progress, on)).await.is_err()
}

#[tokio::test(start_paused = true)]
async fn a_moved_batch_waits_until_every_worker_it_follows_has_ended_its_batch() {
    let (doing, done) = progress::channels(3);
    assert!(!waits(&done, &[]).await, "nothing to wait for");
    doing[0].send_replace(4);
    assert!(waits(&done, &[(0, 5)]).await);
    doing[0].send_replace(5);
    assert!(!waits(&done, &[(0, 5)]).await);
    // Several workers: it waits for the last of them, whatever the order they end in.
    let on = [(1, 2), (2, 1)];
    let waiting = tokio::spawn({
        let done = done.clone();
        async move { after(&done, &on).await }
    });
    doing[2].send_replace(1);
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    doing[1].send_replace(3);
    tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("it ends once both have").unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_is_gone_is_waited_for_no_more() {
    let (mut doing, done) = progress::channels(2);
    doing[1].send_replace(1);
    assert!(waits(&done, &[(1, 2)]).await);
    // Its sender dropped: whatever it did not commit, the moved batch's fence finds out.
    doing.pop();
    assert!(!waits(&done, &[(1, 2)]).await);
    // A worker the batch names but that never existed (a shorter progress list) is no wait.
    assert!(!waits(&done[..1], &[(1, 2)]).await);
}
