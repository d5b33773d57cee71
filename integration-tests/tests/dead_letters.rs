//! Bad input never blocks: 2 % invalid messages of many kinds are interleaved with valid ones.
//! Every valid event is a row, every invalid one a dead letter with its specific reason.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::{Env, event};

/// (message value, the reason aurore must give). `None`: a tombstone.
fn bad_inputs() -> Vec<(Option<Vec<u8>>, &'static str)> {
    let b = |s: &str| Some(s.as_bytes().to_vec());
    vec![
        (Some(b"\xff\xfe{\"service\":\"s\"}".to_vec()), "not_utf8"),
        (b(r#"{"service":"s","event_type":"#), "invalid_json"),
        (b("[1,2,3]"), "not_object"),
        (b("42"), "not_object"),
        (b(r#""just a string""#), "not_object"),
        (b(r#"{"event_type":"t"}"#), "missing_field"),
        (b(r#"{"service":"","event_type":"t"}"#), "empty_field"),
        (Some(format!(r#"{{"service":"{}","event_type":"t"}}"#, "x".repeat(200)).into_bytes()), "field_too_long"),
        (b(r#"{"service":17,"event_type":"t"}"#), "wrong_type"),
        (b(r#"{"service":"s","event_type":"t","payload":{"k":"a\u0000b"}}"#), "nul_character"),
        (b(r#"{"service":"s","event_type":"t","payload":"\udc00"}"#), "lone_surrogate"),
        (b(r#"{"service":"s","event_type":"t","timestamp":"0000-01-01T00:00:00Z"}"#), "timestamp_out_of_range"),
        (b(r#"{"service":"s","event_type":"t","timestamp":"not a time"}"#), "invalid_timestamp"),
        (b(r#"{"service":"s","event_type":"t","id":"not-a-uuid"}"#), "invalid_id"),
        (b(r#"{"service":"s","service":"s","event_type":"t"}"#), "duplicate_key"),
        (Some([&b"\xef\xbb\xbf"[..], br#"{"service":"s","event_type":"t"}"#].concat()), "byte_order_mark"),
        (Some(Vec::new()), "empty"),
        (None, "tombstone"),
        (b(r#"{"service":"s","event_type":"t","payload":1e999999}"#), "number_out_of_range"),
        (
            Some(
                format!(r#"{{"service":"s","event_type":"t","payload":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000))
                    .into_bytes(),
            ),
            "too_deep",
        ),
        (b(r#"{"event_type":"t","service":null}"#), "wrong_type"),
        (b(r#"{"service":"s","event_type":"t","timestamp":"+300000-01-01T00:00:00Z"}"#), "invalid_timestamp"),
        (b(r#"{"service":"s","event_type":"t","timestamp":17}"#), "invalid_timestamp"),
        (b(r#"{"service":"s","event_type":"t","payload":{"a":1}"#), "invalid_json"),
    ]
}

#[tokio::test]
async fn invalid_messages_become_dead_letters_with_their_reason() {
    // The topic takes the 5 MiB message below (the broker's default limit is 1 MiB).
    let env = Env::new("dead_letters", 4, &[("max.message.bytes", "10485760")]).await;
    let kinds = bad_inputs();
    let mut messages = Vec::new();
    let mut want: BTreeMap<&str, i64> = BTreeMap::new();
    let mut valid = 0i64;
    for i in 0..20_000u64 {
        let p = (i % 4) as i32;
        if i % 50 == 7 {
            let (value, reason) = &kinds[(i / 50) as usize % kinds.len()];
            messages.push((p, value.clone()));
            *want.entry(reason).or_default() += 1;
        } else {
            messages.push((p, Some(event("svc", "t", i))));
            valid += 1;
        }
    }
    // And one 5 MiB message, over --max-event-bytes (1 MiB): dead-lettered with its size.
    let huge = format!(r#"{{"service":"s","event_type":"t","payload":"{}"}}"#, "x".repeat(5 << 20)).into_bytes();
    messages.insert(10_001, (1, Some(huge.clone())));
    *want.entry("oversized").or_default() += 1;
    assert!(kinds.len() + 1 >= 20, "at least 20 kinds of bad input: {}", kinds.len() + 1);
    let producer = env.producer(&[("message.max.bytes", "10485760")]);
    env.produce(&producer, messages).await;
    let aurore = env.spawn_aurore(&[]);
    env.wait_persisted(20_001, Duration::from_secs(180)).await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (valid, 401));
    let db = env.db().await;
    let got: BTreeMap<String, i64> = db
        .query("SELECT reason, count(*)::int8 FROM dead_letters GROUP BY reason", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want: BTreeMap<String, i64> = want.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(got, want);
    // The raw bytes are kept as received, and every detail says something.
    let raw: Option<Vec<u8>> =
        db.query_one("SELECT raw FROM dead_letters WHERE reason = 'not_utf8' LIMIT 1", &[]).await.unwrap().get(0);
    assert_eq!(raw.as_deref(), Some(&b"\xff\xfe{\"service\":\"s\"}"[..]));
    let tomb: Option<Vec<u8>> =
        db.query_one("SELECT raw FROM dead_letters WHERE reason = 'tombstone' LIMIT 1", &[]).await.unwrap().get(0);
    assert_eq!(tomb, None);
    let (len, detail): (i32, String) = {
        let r = db.query_one("SELECT length(raw), detail FROM dead_letters WHERE reason = 'oversized'", &[]).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(len, 64 * 1024, "an oversized message is not stored whole");
    assert!(detail.contains(&huge.len().to_string()), "{detail}");
    let empty_details: i64 = db.query_one("SELECT count(*) FROM dead_letters WHERE detail = ''", &[]).await.unwrap().get(0);
    assert_eq!(empty_details, 0);
    // And the metrics say the same, reason by reason.
    let metrics = integration_tests::Metrics::scrape(&aurore).unwrap();
    for (reason, n) in &want {
        assert_eq!(metrics.get("events_dead_lettered_total", &[("reason", reason)]), Some(*n as f64), "{reason}");
    }
}

/// Rows that pass validation but PostgreSQL refuses (here a CHECK constraint, SQLSTATE 23514)
/// are isolated by bisection and dead-lettered with PostgreSQL's message; the rest commits.
#[tokio::test]
async fn rows_postgres_refuses_are_isolated_and_dead_lettered() {
    let env = Env::new("poison_rows", 2, &[]).await;
    let migrated = std::process::Command::new(integration_tests::aurore_bin())
        .arg("migrate")
        .env("DATABASE_URL", &env.database_url)
        .status()
        .unwrap();
    assert!(migrated.success());
    env.db().await.batch_execute("ALTER TABLE events ADD CONSTRAINT no_poison CHECK (service <> 'poison')").await.unwrap();
    let messages: Vec<_> = (0..5_000u64)
        .map(|i| {
            let service = if i % 1000 == 500 { "poison" } else { "fine" };
            ((i % 2) as i32, Some(format!(r#"{{"service":"{service}","event_type":"t","payload":{{"i":{i}}}}}"#).into_bytes()))
        })
        .collect();
    env.produce(&env.producer(&[]), messages).await;
    let _aurore = env.spawn_aurore(&["--no-migrate"]);
    env.wait_persisted(5_000, Duration::from_secs(120)).await;
    assert_eq!(env.assert_exactly_once().await, (4_995, 5));
    let db = env.db().await;
    let rows = db.query("SELECT reason, detail, convert_from(raw, 'UTF8') FROM dead_letters", &[]).await.unwrap();
    for r in &rows {
        assert_eq!(r.get::<_, &str>(0), "postgres_rejected");
        assert!(r.get::<_, &str>(1).contains("no_poison"), "PostgreSQL's message: {}", r.get::<_, &str>(1));
        assert!(r.get::<_, &str>(2).contains("\"poison\""), "the row's fields: {}", r.get::<_, &str>(2));
    }
    let counted: i64 = db.query_one("SELECT sum(events)::int8 FROM event_counts", &[]).await.unwrap().get(0);
    assert_eq!(counted, 4_995, "refused rows are not counted");
}
