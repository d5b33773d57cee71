//! PostgreSQL goes away for 30 s while 100,000 events flow: aurore is never restarted, stays in
//! its group, reports the outage (503, app_health_status 0, circuit open), recovers on its own,
//! and ends with exactly the events produced. Before that, the server itself ends aurore's
//! connections (`pg_terminate_backend`, as a restart or an operator would). Every log line about
//! either is in the server's words, names the database, and says what happens next.

use std::time::{Duration, Instant};

use integration_tests::{Aurore, Env, Metrics, Proxy, events, free_port, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_survived_and_reported() {
    const TOTAL: u64 = 100_000;
    let env = Env::new("outage", 6, &[]).await;
    let proxy = Proxy::start(env.database_addr()).await;
    // Five failures in a row open the circuit: with a 200 ms first backoff, about 1.5-3 s of
    // "degraded" (retrying) come before "down" (circuit open).
    let aurore = Aurore::spawn_with(
        &env,
        &["--breaker-threshold", "5", "--retry-backoff", "200ms", "--retry-backoff-max", "2s"],
        free_port(),
        &env.database_url_via(proxy.port),
    );
    let producer = env.producer(&[]);
    let all = events(TOTAL, 6);
    env.produce(&producer, all[..20_000].to_vec()).await;
    env.wait_persisted(20_000, Duration::from_secs(120)).await;
    aurore.wait_ready(Duration::from_secs(30)).await;
    // The server ends every connection of aurore's: the connections are replaced unseen.
    let db = env.db().await;
    let terminated: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name IN ('aurore', 'aurore durability') AND datname = current_database()) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(terminated > 0, "aurore holds connections to its database");
    let lost = "PostgreSQL connection lost";
    wait_until("the lost connections logged", Duration::from_secs(30), || async {
        aurore.log_text().contains(lost).then_some(())
    })
    .await;
    let before = Metrics::scrape(&aurore).unwrap();
    let rebalances = before.get("kafka_rebalances_total", &[]).unwrap();

    proxy.cut();
    let cut_at = Instant::now();
    let rest = all[20_000..].iter().map(|(p, v)| (*p, v.clone().unwrap())).collect();
    let produce_rest = env.produce_stream(&producer, rest, 10_000, Duration::from_secs(2));
    let statuses = std::sync::Mutex::new(Vec::<String>::new());
    let down = wait_until("/health 503 and the circuit open", Duration::from_secs(30), || async {
        let (code, body) = aurore.get("/health")?;
        let h: serde_json::Value = serde_json::from_str(&body).ok()?;
        note(&statuses, &h);
        (code == 503 && h["circuit_breaker"] == "open").then_some(h)
    })
    .await;
    assert_eq!(down["status"], "down");
    let m = Metrics::scrape(&aurore).unwrap();
    assert_eq!(m.get("app_health_status", &[]), Some(0.0));
    assert_eq!(m.get("circuit_breaker_state", &[]), Some(2.0));
    assert_eq!(m.get("database_connection_up", &[]), Some(0.0));
    assert!(m.get("worker_flush_errors_total", &[("kind", "transient")]).unwrap() >= 3.0);
    // Keep it down for 30 s, watching that aurore stays in its group and keeps its partitions.
    while cut_at.elapsed() < Duration::from_secs(30) {
        let m = Metrics::scrape(&aurore).expect("aurore keeps serving during the outage");
        assert_eq!(m.get("kafka_assigned_partitions", &[]), Some(6.0), "still owns its partitions");
        assert_eq!(m.get("kafka_rebalances_total", &[]), Some(rebalances), "no rebalance: it stayed in the group");
        assert_eq!(m.get("buffer_events_dropped_total", &[]), Some(0.0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let paused = Metrics::scrape(&aurore).unwrap().get("kafka_fetch_paused", &[]);
    assert_eq!(paused, Some(1.0), "fetching paused while the circuit is open");

    proxy.restore();
    wait_until("/health 200, healthy, circuit closed", Duration::from_secs(60), || async {
        let (code, body) = aurore.get("/health")?;
        let h: serde_json::Value = serde_json::from_str(&body).ok()?;
        note(&statuses, &h);
        (code == 200 && h["status"] == "healthy" && h["circuit_breaker"] == "closed").then_some(())
    })
    .await;
    produce_rest.await.unwrap();
    env.wait_persisted(TOTAL as i64, Duration::from_secs(180)).await;
    assert_eq!(env.assert_exactly_once().await, (TOTAL as i64, 0));
    let m = Metrics::scrape(&aurore).unwrap();
    assert_eq!(m.get("app_health_status", &[]), Some(1.0));
    assert_eq!(m.get("kafka_rebalances_total", &[]), Some(rebalances), "never left the group");
    // Retrying (degraded), circuit open (down), maybe probing (degraded), recovered (healthy);
    // the first look may come before the first failed transaction.
    let seen = statuses.lock().unwrap().clone();
    let seen: Vec<&str> = seen.iter().map(String::as_str).skip_while(|s| *s == "healthy").collect();
    assert!(
        seen == ["degraded", "down", "healthy"] || seen == ["degraded", "down", "degraded", "healthy"],
        "/health statuses in order: {seen:?}"
    );
    logs_say_what_failed_where_and_what_next(&aurore.log_text(), &format!("127.0.0.1:{}", proxy.port));
}

/// The outage's log lines: the server's words, never a library's "db error"; the database named;
/// what happens next said.
fn logs_say_what_failed_where_and_what_next(log: &str, address: &str) {
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))).collect();
    for vague in ["db error", "could not be recycled", "Error occurred while creating a new object", "Connection error"] {
        assert!(!log.contains(vague), "{vague:?} logged:\n{log}");
    }
    let with = |message: &str| {
        lines.iter().filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(message))).collect::<Vec<_>>()
    };
    let lost = with("PostgreSQL connection lost; the pool opens a new one");
    let retried = with("PostgreSQL unavailable; the batch is kept and retried");
    assert!(!lost.is_empty() && !retried.is_empty(), "lost connections and retried batches logged:\n{log}");
    for line in lost.iter().chain(&retried) {
        assert_eq!(line["level"], "WARN", "{line}");
        let database = line["database"].as_str().unwrap_or_else(|| panic!("no database field: {line}"));
        assert!(database.contains(address) && !database.contains(":aurore@"), "database {database:?}: {line}");
    }
    // The server's own words for pg_terminate_backend, with the SQLSTATE.
    assert!(
        lost.iter().any(|l| l["error"] == "terminating connection due to administrator command (SQLSTATE 57P01)"),
        "{lost:?}"
    );
    for line in &retried {
        assert!(line["retry_in_ms"].as_u64().is_some() && line["breaker"].is_string(), "{line}");
        // What failed, then why: "persisting a batch: cannot connect: error communicating with
        // the server: Connection reset by peer (os error 104)".
        let error = line["error"].as_str().unwrap();
        let (what, why) = error.split_once(": ").unwrap_or_else(|| panic!("no cause: {line}"));
        assert!(!what.is_empty() && why.len() > 20, "{line}");
    }
}

/// Records /health's status when it changes.
fn note(statuses: &std::sync::Mutex<Vec<String>>, health: &serde_json::Value) {
    let status = health["status"].as_str().unwrap_or("?").to_owned();
    let mut seen = statuses.lock().unwrap();
    if seen.last() != Some(&status) {
        seen.push(status);
    }
}
