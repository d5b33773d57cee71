//! Chaos: a producer publishes about 3,000 events/s while aurore, run with a static instance
//! id, is killed with SIGKILL twenty times at random moments and restarted at once each time.
//! Every restart stores new rows (the time to resume is printed: min, median, max), and the end
//! state is exactly once.

use std::time::{Duration, Instant};

use integration_tests::{Env, event, wait_until};

/// A small deterministic generator (SplitMix64): the seed is printed, so a failing run can be
/// replayed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_under_a_live_stream_end_exactly_once() {
    // Enough for the stream to outlast the kills (at most 20 × (resume + 2.5 s)).
    const TOTAL: u64 = 300_000;
    const KILLS: usize = 20;
    let env = Env::new("chaos", 6, &[]).await;
    let seed = std::env::var("AURORE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("[chaos] seed {seed} (AURORE_CHAOS_SEED={seed} replays the kill moments)");
    let mut rng = SplitMix(seed);
    let id = format!("{}-0", env.group);
    let args = ["--instance-id", id.as_str(), "--linger", "50ms"];
    let producer = env.producer(&[]);
    // 300 events every 100 ms: about 3,000 a second, for about 100 s.
    let stream = (0..TOTAL).map(|i| ((i % 6) as i32, event("svc", "chaos", i))).collect();
    let produce = env.produce_stream(&producer, stream, 300, Duration::from_millis(100));
    let mut resumed = Vec::with_capacity(KILLS);
    for kill in 1..=KILLS {
        let before = env.persisted().await;
        let started = Instant::now();
        let mut aurore = env.spawn_aurore(&args);
        let took = wait_until(&format!("kill {kill}: new rows after the restart"), Duration::from_secs(60), || async {
            (env.persisted().await > before).then(|| started.elapsed())
        })
        .await;
        resumed.push(took);
        // A random moment: 0 to 2.5 s after it resumed.
        tokio::time::sleep(Duration::from_millis(rng.next() % 2_500)).await;
        aurore.kill9();
    }
    produce.await.unwrap();
    let _last = env.spawn_aurore(&args);
    env.wait_persisted(TOTAL as i64, Duration::from_secs(300)).await;
    assert_eq!(env.assert_exactly_once().await, (TOTAL as i64, 0));
    resumed.sort();
    eprintln!(
        "[chaos] {KILLS} SIGKILLs: new rows after each restart within min {} ms, median {} ms, max {} ms",
        resumed[0].as_millis(),
        resumed[KILLS / 2].as_millis(),
        resumed[KILLS - 1].as_millis()
    );
}
