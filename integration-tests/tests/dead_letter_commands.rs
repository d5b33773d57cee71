//! `aurore dead-letters list|show|replay|purge` against the real database, with aurore running
//! beside them: rows refused by a user's CHECK constraint become events once it is dropped,
//! while the pipeline goes on storing new messages, and every offset stays in exactly one of
//! `events` and `dead_letters`.

use std::process::Command;
use std::time::Duration;

use integration_tests::{Env, Metrics, aurore_bin, event, wait_until};

/// Runs `aurore dead-letters ARGS` against the test's database: (exit code, stdout, stderr).
fn dead_letters(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(aurore_bin())
        .arg("dead-letters")
        .args(args)
        .env("DATABASE_URL", &env.database_url)
        .env("AURORE_LOG_FORMAT", "text")
        .output()
        .expect("running aurore dead-letters");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    eprintln!("[dead-letters] {args:?}: {:?}\n{stdout}{stderr}", out.status.code());
    (out.status.code().expect("exit code"), stdout, stderr)
}

async fn count(env: &Env, sql: &str) -> i64 {
    env.db().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// dead_letter_counts agrees with the table, reason by reason.
async fn assert_counts_agree(env: &Env) {
    let off: i64 = count(
        env,
        "SELECT count(*) FROM (SELECT topic, reason, count(*) AS n FROM dead_letters GROUP BY 1, 2) t
         FULL JOIN (SELECT topic, reason, stored FROM dead_letter_counts WHERE stored <> 0) c USING (topic, reason)
         WHERE t.n IS DISTINCT FROM c.stored",
    )
    .await;
    assert_eq!(off, 0, "dead_letter_counts.stored differs from the table");
    let counted: i64 = count(env, "SELECT coalesce(sum(events), 0)::int8 FROM event_counts").await;
    assert_eq!(counted, count(env, "SELECT count(*) FROM events").await, "event_counts against events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_purge() {
    let env = Env::new("dl_list", 1, &[]).await;
    let escape = b"{\"service\":\"s\",\"event_type\":\"\x1b[31mred\"".to_vec();
    let messages = vec![
        (0, Some(b"not json".to_vec())),
        (0, Some(vec![0xff, 0xfe, 0x00, 0x41])),
        (0, Some(escape)),
        (0, Some(vec![b'x'; 70_000])),
        (0, Some(event("svc", "t", 1))),
        (0, None),
    ];
    env.produce(&env.producer(&[]), messages).await;
    let aurore = env.spawn_aurore(&[]);
    env.wait_persisted(6, Duration::from_secs(60)).await;
    aurore.signal("TERM");

    let (code, out, _) = dead_letters(&env, &["list", "--format", "json"]);
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 5, "{out}");
    let by_offset = |o: i64| rows.iter().find(|r| r["offset"] == o).unwrap_or_else(|| panic!("offset {o}: {out}"));
    assert_eq!(by_offset(0)["reason"], "invalid_json");
    assert_eq!(by_offset(3)["size"], 70_000, "the whole size, though 64 KiB are kept");
    assert_eq!(by_offset(5)["reason"], "tombstone");
    let (_, out, _) = dead_letters(&env, &["list", "--reason", "invalid_json", "--limit", "1", "--format", "json"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let (_, table, _) = dead_letters(&env, &["list", "--topic", &env.topic]);
    assert!(table.starts_with("RECEIVED_AT") && table.lines().count() == 6, "{table}");
    assert!(!table.contains('\x1b'), "the table prints no escape character");

    let (code, out, _) = dead_letters(&env, &["show", &env.topic, "0", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("message (hex: not valid UTF-8), each line after \"| \":\n| 00000000  ff fe 00 41"), "{out}");
    let (_, out, _) = dead_letters(&env, &["show", &env.topic, "0", "2"]);
    assert!(out.contains("\\u{1b}[31mred") && !out.contains('\x1b'), "{out}");
    let (_, out, _) = dead_letters(&env, &["show", &env.topic, "0", "3", "--max-bytes", "100"]);
    assert!(out.contains("size:        70000 bytes, of which the first 65536 are stored"), "{out}");
    assert!(out.contains("… cut: 100 of 65536 stored bytes shown"), "{out}");
    let (code, _, err) = dead_letters(&env, &["show", &env.topic, "0", "4"]);
    assert_eq!(code, 1, "offset 4 is an event");
    assert!(err.contains("no dead letter at"), "{err}");

    // A purge counts first; a dry run deletes nothing.
    let (code, out, _) = dead_letters(&env, &["purge", "--older-than", "0s", "--reason", "invalid_json", "--dry-run"]);
    assert_eq!((code, out.lines().next().unwrap()), (0, "3 dead letters older than 0s match; --dry-run: nothing deleted"));
    assert_eq!(count(&env, "SELECT count(*) FROM dead_letters").await, 5);
    let (_, out, _) = dead_letters(&env, &["purge", "--older-than", "1h"]);
    assert!(out.starts_with("0 dead letters older than 1h match"), "{out}");
    let (code, out, _) = dead_letters(&env, &["purge", "--older-than", "0s", "--topic", &env.topic]);
    assert_eq!(code, 0);
    assert!(out.ends_with("purged 5 dead letters\n"), "{out}");
    assert_eq!(count(&env, "SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(count(&env, "SELECT sum(purged)::int8 FROM dead_letter_counts").await, 5);
    assert_counts_agree(&env).await;

    // Bad usage: exit 2.
    for args in [
        &["purge"][..],
        &["list", "--limit", "0"],
        &["show", "t", "zero", "1"],
        &["replay", "--since", "soon"],
        &["list", "--since", "500000y"],
        &["purge", "--older-than", "500000y"],
        &["list", "--reason", "no_such_reason"],
        &["replay", "--max-event-bytes", "0"],
    ] {
        assert_eq!(dead_letters(&env, args).0, 2, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_a_constraint_is_dropped_races_a_running_aurore_exactly_once() {
    let env = Env::new("dl_replay", 2, &[]).await;
    let status = Command::new(aurore_bin()).arg("migrate").env("DATABASE_URL", &env.database_url).status().unwrap();
    assert!(status.success());
    let db = env.db().await;
    db.batch_execute("ALTER TABLE events ADD CONSTRAINT no_blocked CHECK (service <> 'blocked')").await.unwrap();
    // Blocked events (with and without id and timestamp), good ones, and bad JSON.
    let mut first = Vec::new();
    for i in 0..300u64 {
        let p = (i % 2) as i32;
        first.push(match i % 3 {
            0 => (p, Some(event("blocked", "t", i))),
            1 => (p, Some(format!(r#"{{"service":"blocked","event_type":"t","payload":{{"i":{i}}},"extra":1}}"#).into_bytes())),
            _ => (p, Some(event("ok", "t", i))),
        });
    }
    first.push((0, Some(b"{not json".to_vec())));
    env.produce(&env.producer(&[]), first).await;
    let aurore = env.spawn_aurore(&[]);
    env.wait_persisted(301, Duration::from_secs(90)).await;
    assert_eq!(count(&env, "SELECT count(*) FROM dead_letters WHERE reason = 'postgres_rejected'").await, 200);
    assert_counts_agree(&env).await;
    wait_until("dead_letters_stored in the metrics", Duration::from_secs(30), || async {
        let m = Metrics::scrape(&aurore)?;
        (m.get("dead_letters_stored", &[("topic", &env.topic), ("reason", "postgres_rejected")])? == 200.0).then_some(())
    })
    .await;

    // Still refused: a dry run and a real run change nothing but the details.
    let (code, out, _) = dead_letters(&env, &["replay", "--reason", "postgres_rejected"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("200 dead letters examined: 0 became events, 200 still fail"), "{out}");

    db.batch_execute("ALTER TABLE events DROP CONSTRAINT no_blocked").await.unwrap();
    // A dead letter another session holds is waited for, not skipped.
    let mut holder = env.db().await;
    let hold = holder.transaction().await.unwrap();
    hold.execute("SELECT 1 FROM dead_letters WHERE reason = 'postgres_rejected' LIMIT 10 FOR UPDATE", &[]).await.unwrap();
    let dry = tokio::task::spawn_blocking({
        let (url, topic) = (env.database_url.clone(), env.topic.clone());
        move || {
            Command::new(aurore_bin())
                .args(["dead-letters", "replay", "--dry-run", "--topic", &topic])
                .env("DATABASE_URL", url)
                .output()
                .unwrap()
        }
    });
    wait_until("the dry run waiting for the held rows", Duration::from_secs(30), || async {
        let waiting: i64 = count(
            &env,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FROM dead_letters%'",
        )
        .await;
        (waiting > 0).then_some(())
    })
    .await;
    hold.rollback().await.unwrap();
    let out = String::from_utf8(dry.await.unwrap().stdout).unwrap();
    assert!(out.starts_with("201 dead letters examined: 200 would become events, 1 still fail"), "{out}");
    let (_, out, _) = dead_letters(&env, &["replay", "--dry-run"]);
    assert!(out.starts_with("201 dead letters examined: 200 would become events, 1 still fail"), "{out}");
    assert_eq!(count(&env, "SELECT count(*) FROM dead_letters").await, 201, "a dry run changes nothing");

    // The replay races the pipeline, which stores new messages meanwhile.
    let more: Vec<(i32, Option<Vec<u8>>)> = (1000..3000u64).map(|i| ((i % 2) as i32, Some(event("ok", "t", i)))).collect();
    let producer = env.producer(&[]);
    let produce = env.produce(&producer, more);
    let replay = tokio::task::spawn_blocking({
        let (url, topic) = (env.database_url.clone(), env.topic.clone());
        move || {
            Command::new(aurore_bin())
                .args(["dead-letters", "replay", "--topic", &topic])
                .env("DATABASE_URL", url)
                .output()
                .unwrap()
        }
    });
    produce.await;
    let out = replay.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("201 dead letters examined: 200 became events, 1 still fail"), "{stdout}");
    env.wait_persisted(2301, Duration::from_secs(90)).await;
    assert_eq!(env.assert_exactly_once().await, (2300, 1));
    assert_counts_agree(&env).await;
    // Replayed as the pipeline would have stored them: explicit ids and times kept, the rest derived.
    let kept: i64 = count(
        &env,
        "SELECT count(*) FROM events WHERE service = 'blocked' AND occurred_at = '2026-01-01T00:00:00Z' AND payload ? 'nested'",
    )
    .await;
    assert_eq!(kept, 100);
    let extra: i64 = count(&env, "SELECT count(*) FROM events WHERE service = 'blocked' AND extra = '{\"extra\": 1}'").await;
    assert_eq!(extra, 100, "unknown fields kept in extra");
    assert_eq!(count(&env, "SELECT replayed FROM dead_letter_counts WHERE reason = 'postgres_rejected'").await, 200);
    wait_until("dead_letters_replayed_total in the metrics", Duration::from_secs(30), || async {
        let m = Metrics::scrape(&aurore)?;
        let labels = [("topic", env.topic.as_str()), ("reason", "postgres_rejected")];
        (m.get("dead_letters_replayed_total", &labels)? == 200.0 && m.get("dead_letters_stored", &labels)? == 0.0).then_some(())
    })
    .await;
    aurore.signal("TERM");
}
