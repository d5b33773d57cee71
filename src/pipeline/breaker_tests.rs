use super::*;

fn breaker() -> Breaker {
    Breaker::new(3, Duration::from_millis(100), Duration::from_secs(2))
}

#[tokio::test(start_paused = true)]
async fn opens_after_threshold_consecutive_failures() {
    let b = breaker();
    let d1 = b.failure();
    let d2 = b.failure();
    assert_eq!(b.state(), State::Closed);
    assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&d1), "{d1:?}");
    assert!((Duration::from_millis(100)..=Duration::from_millis(200)).contains(&d2), "{d2:?}");
    b.failure();
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn success_resets_the_count() {
    let b = breaker();
    b.failure();
    b.failure();
    b.success();
    b.failure();
    b.failure();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn open_waits_then_lets_one_probe_through_and_closes_on_success() {
    let b = breaker();
    for _ in 0..3 {
        b.failure();
    }
    let start = Instant::now();
    let _probe = b.ready().await;
    let waited = start.elapsed();
    assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&waited), "{waited:?}");
    assert_eq!(b.state(), State::HalfOpen);
    // A second caller waits while the probe is out.
    let second = tokio::time::timeout(Duration::from_millis(500), b.ready()).await;
    assert!(second.is_err(), "only one probe at a time");
    b.success();
    assert_eq!(b.state(), State::Closed);
    let _ = tokio::time::timeout(Duration::from_millis(1), b.ready()).await.expect("closed lets everything through");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_with_a_longer_capped_backoff() {
    let b = breaker();
    for _ in 0..3 {
        b.failure();
    }
    for round in 0..8u32 {
        let _probe = b.ready().await;
        assert_eq!(b.state(), State::HalfOpen);
        let d = b.failure();
        assert_eq!(b.state(), State::Open);
        // The n-th re-open waits base × 2^(threshold + n - 1), capped, jittered over its upper half.
        let nominal = (Duration::from_millis(100) * 2u32.pow(3 + round)).min(Duration::from_secs(2));
        assert!(nominal / 2 <= d && d <= nominal, "round {round}: {d:?} outside {:?}..={nominal:?}", nominal / 2);
    }
}

/// A probe that ends with neither success nor failure (PostgreSQL refused a row, so the batch is
/// retried row by row; the dead letter topic failed) frees its place: before, every worker,
/// the prober included, waited for its outcome forever.
#[tokio::test(start_paused = true)]
async fn a_probe_dropped_untold_lets_the_next_attempt_probe() {
    let b = breaker();
    for _ in 0..3 {
        b.failure();
    }
    let probe = b.ready().await;
    assert_eq!(b.state(), State::HalfOpen);
    drop(probe);
    let again = tokio::time::timeout(Duration::from_millis(1), b.ready()).await.expect("the next attempt probes");
    assert_eq!(b.state(), State::HalfOpen);
    b.success();
    drop(again);
    assert_eq!(b.state(), State::Closed);
}

/// A probe's late drop does not free a later probe's place.
#[tokio::test(start_paused = true)]
async fn a_late_drop_leaves_a_later_probe_alone() {
    let b = breaker();
    for _ in 0..3 {
        b.failure();
    }
    let first = b.ready().await;
    b.failure();
    let second = b.ready().await;
    assert_eq!(b.state(), State::HalfOpen);
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(60), b.ready()).await;
    assert!(third.is_err(), "only one probe at a time");
    drop(second);
}

/// The reviewer's case: a probe outlives a close and a re-open to the same open count; its late
/// drop must not free the new probe's place.
#[tokio::test(start_paused = true)]
async fn a_probe_outliving_a_close_and_reopen_leaves_the_new_probe_alone() {
    let b = breaker();
    for _ in 0..3 {
        b.failure();
    }
    let old = b.ready().await;
    b.success(); // another worker's attempt, let through while closed, succeeded
    for _ in 0..3 {
        b.failure();
    }
    let new = b.ready().await;
    assert_eq!(b.state(), State::HalfOpen);
    drop(old);
    let third = tokio::time::timeout(Duration::from_secs(60), b.ready()).await;
    assert!(third.is_err(), "only one probe at a time");
    drop(new);
}
