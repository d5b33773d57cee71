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
    b.ready().await;
    let waited = start.elapsed();
    assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&waited), "{waited:?}");
    assert_eq!(b.state(), State::HalfOpen);
    // A second caller waits while the probe is out.
    let second = tokio::time::timeout(Duration::from_millis(500), b.ready()).await;
    assert!(second.is_err(), "only one probe at a time");
    b.success();
    assert_eq!(b.state(), State::Closed);
    tokio::time::timeout(Duration::from_millis(1), b.ready()).await.expect("closed lets everything through");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_with_a_longer_capped_backoff() {
    let b = breaker();
    for _ in 0..3 {
        b.failure();
    }
    for round in 0..8u32 {
        b.ready().await;
        assert_eq!(b.state(), State::HalfOpen);
        let d = b.failure();
        assert_eq!(b.state(), State::Open);
        // The n-th re-open waits base × 2^(threshold + n - 1), capped, jittered over its upper half.
        let nominal = (Duration::from_millis(100) * 2u32.pow(3 + round)).min(Duration::from_secs(2));
        assert!(nominal / 2 <= d && d <= nominal, "round {round}: {d:?} outside {:?}..={nominal:?}", nominal / 2);
    }
}
