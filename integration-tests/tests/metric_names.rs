//! `promtool check metrics` on a live scrape of /metrics/prometheus complains about nothing but
//! the original design's names in [`KEPT`], each kept on purpose, and about each of them still.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::{Env, events, wait_until};

/// (metric, promtool's complaint): names the original design fixed, which break a Prometheus
/// naming convention and stay, because the design's dashboards, alerts and users read them.
const KEPT: &[(&str, &str)] = &[
    // The design's count of persisted events, read from event_counts every 5 s: a gauge (it is
    // a level read from PostgreSQL, not a count this process increments, and it falls when rows
    // are deleted), so the convention would drop `_total`; the design named it so, beside
    // `business_events_by_service` and `business_events_last_24h`.
    ("business_events_total", r#"non-counter metrics should not have "_total" suffix"#),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_check_metrics_complains_only_about_the_original_designs_names() {
    let env = Env::new("metric_names", 2, &[]).await;
    env.produce(&env.producer(&[]), events(20, 2)).await;
    let aurore = env.spawn_aurore(&[]);
    env.wait_persisted(20, Duration::from_secs(60)).await;
    // Labelled families appear once set: per-partition lag (statistics every 5 s) and the
    // business gauges (ticker every 5 s).
    let body = wait_until("a scrape with every family", Duration::from_secs(30), || async {
        let (status, body) = aurore.get("/metrics/prometheus")?;
        let complete = status == 200
            && body.contains("\nkafka_consumer_lag{")
            && body.contains("\nbusiness_events_by_service{")
            && body.contains("\nbusiness_events_last_24h_by_service{");
        complete.then_some(body)
    })
    .await;
    assert!(body.contains("\nkafka_consumer_lag_messages "), "the summed lag gauge:\n{body}");
    assert!(!body.contains("kafka_consumer_lag_sum"), "the old name, which reads as a summary's _sum:\n{body}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running promtool: {e} (scripts/stack up installs Debian's prometheus, which has it)"));
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let complaints: Vec<&str> = report.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    for line in &complaints {
        assert!(
            KEPT.iter().any(|(name, says)| *line == format!("{name} {says}")),
            "promtool check metrics: {line:?} is not an original design's name kept on purpose:\n{report}"
        );
    }
    for (name, says) in KEPT {
        assert!(
            complaints.contains(&format!("{name} {says}").as_str()),
            "{name} no longer draws {says:?}: drop it from KEPT\n{report}"
        );
    }
    // promtool exits 3 when it found problems, 0 when none.
    assert_eq!(out.status.code(), Some(if complaints.is_empty() { 0 } else { 3 }), "{report}");
}
