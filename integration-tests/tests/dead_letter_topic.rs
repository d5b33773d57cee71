//! `--dead-letter-topic`: every dead letter also reaches a Kafka topic, value and key whole, with
//! Kafka Connect's DLQ headers, at least once, while aurore is killed (SIGKILL) mid-stream: the
//! copies are delivered before the batch commits, so a crash between the two repeats a copy and
//! never loses one; PostgreSQL stays exactly once. The same window is also made to happen on
//! purpose: a COMMIT that fails after the copies were delivered.

use std::collections::HashMap;
use std::time::Duration;

use integration_tests::{Env, aurore_bin, event, fast_group, wait_until};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;

/// Message `i`: every 20th is invalid (every 100th too large for the table's 64 KiB), with a key.
fn message(i: u64) -> (Vec<u8>, Option<Vec<u8>>) {
    match i {
        i if i % 100 == 7 => (format!("big {i} {}", "x".repeat(70_000)).into_bytes(), Some(format!("k{i}").into_bytes())),
        i if i % 20 == 3 => (format!("{{\"broken\": {i}").into_bytes(), Some(format!("k{i}").into_bytes())),
        i => (event("svc", "t", i), None),
    }
}

/// A record read back: (value, key, headers by name).
type Record = (Vec<u8>, Option<Vec<u8>>, HashMap<String, String>);

/// Every record of `topic`, from the start.
fn read_all(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", "unused").create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks");
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut at: HashMap<i32, i64> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (0..PARTITIONS).any(|p| at.get(&p).map_or(0, |o| o + 1) < ends[&p]) {
        assert!(std::time::Instant::now() < deadline, "reading {topic}: {at:?} of {ends:?}");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.expect("reading the dead-letter topic");
        at.insert(m.partition(), m.offset());
        let headers = m
            .headers()
            .map(|h| {
                h.iter().map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect()
            })
            .unwrap_or_default();
        out.push((m.payload().unwrap_or_default().to_vec(), m.key().map(<[u8]>::to_vec), headers));
    }
    out
}

/// Creates `<topic>-dlq`, of as many partitions as the source.
async fn create_dead_letter_topic(env: &Env) -> String {
    let dlq = format!("{}-dlq", env.topic);
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &env.stack.brokers).create().expect("admin client");
    admin
        .create_topics([&NewTopic::new(&dlq, PARTITIONS, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("creating the dead-letter topic")
        .into_iter()
        .for_each(|r| drop(r.expect("creating the dead-letter topic")));
    dlq
}

/// Produces messages `0..total` ([`message`]), message `i` to partition `i % PARTITIONS`.
async fn produce(env: &Env, total: u64) {
    let producer = env.producer(&[]);
    let mut sends = Vec::new();
    for i in 0..total {
        let (value, key) = message(i);
        let producer = producer.clone();
        let topic = env.topic.clone();
        sends.push(async move {
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&topic).partition((i % PARTITIONS as u64) as i32).payload(&value);
            if let Some(k) = &key {
                rec = rec.key(k);
            }
            producer.send(rec, Duration::from_secs(60)).await.expect("produce");
        });
    }
    futures::future::join_all(sends).await;
}

/// Checks every copy in `dlq` against the dead letter it stands for (headers, value and key
/// whole) and that every dead letter has one; returns the copies per (partition, offset).
async fn check_copies(env: &Env, dlq: &str) -> HashMap<(i32, i64), usize> {
    let copies = read_all(&env.stack.brokers, dlq);
    let mut seen: HashMap<(i32, i64), usize> = HashMap::new();
    let db = env.db().await;
    let stored: HashMap<(i32, i64), String> = db
        .query("SELECT partition, \"offset\", reason FROM dead_letters", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    for (value, key, h) in &copies {
        assert_eq!(h["__connect.errors.topic"], env.topic);
        assert_eq!(h["__connect.errors.connector.name"], "aurore");
        let at: (i32, i64) = (h["__connect.errors.partition"].parse().unwrap(), h["__connect.errors.offset"].parse().unwrap());
        let reason = stored.get(&at).unwrap_or_else(|| panic!("a copy of {at:?}, which is no dead letter"));
        assert_eq!(&h["__connect.errors.exception.class.name"], reason);
        // Offsets follow the production order per partition: message i is at offset i / PARTITIONS.
        let i = at.1 as u64 * PARTITIONS as u64 + at.0 as u64;
        let (want_value, want_key) = message(i);
        assert!(value == &want_value, "copy of message {i}: the value whole ({} bytes, want {})", value.len(), want_value.len());
        assert_eq!(key, &want_key);
        *seen.entry(at).or_default() += 1;
    }
    let missing: Vec<_> = stored.keys().filter(|k| !seen.contains_key(k)).collect();
    assert!(missing.is_empty(), "dead letters without a copy: {missing:?}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dead_letter_reaches_the_topic_at_least_once_through_crashes() {
    const TOTAL: u64 = 6_000;
    let env = Env::new("dl_topic", PARTITIONS, &[]).await;
    let dlq = create_dead_letter_topic(&env).await;
    produce(&env, TOTAL).await;

    let mut args = vec!["--dead-letter-topic", dlq.as_str(), "--batch-size", "200"];
    args.extend(fast_group("classic"));
    for round in 1..=2 {
        let mut aurore = env.spawn_aurore(&args);
        let before = env.persisted().await;
        wait_until(&format!("progress before kill {round}"), Duration::from_secs(60), || async {
            (env.persisted().await > before + 500).then_some(())
        })
        .await;
        aurore.kill9();
    }
    let aurore = env.spawn_aurore(&args);
    env.wait_persisted(TOTAL as i64, Duration::from_secs(120)).await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!(rows + dead, TOTAL as i64);
    aurore.signal("TERM");

    let seen = check_copies(&env, &dlq).await;
    let repeated = seen.values().filter(|n| **n > 1).count();
    eprintln!("[dl_topic] {dead} dead letters, {} copies, {repeated} repeated by the crashes", seen.values().sum::<usize>());
}

/// The window between delivering the copies and COMMIT, made to happen rather than hoped for: a
/// deferred constraint trigger fails the first COMMIT that stores dead letters with
/// `serialization_failure` (SQLSTATE 40001, which PostgreSQL itself raises at COMMIT under
/// SERIALIZABLE, and aurore retries). The copies of that batch were delivered and its rows rolled
/// back; the retry delivers them again. So the topic holds them twice, PostgreSQL once, and a
/// crash at the same point (the process gone instead of the COMMIT) leaves the same: copies at
/// least once, rows exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_after_the_copies_were_delivered_repeats_them_and_stores_once() {
    const TOTAL: u64 = 600;
    let env = Env::new("dl_topic_commit", PARTITIONS, &[]).await;
    let dlq = create_dead_letter_topic(&env).await;
    let migrated =
        std::process::Command::new(aurore_bin()).arg("migrate").env("DATABASE_URL", &env.database_url).output().unwrap();
    assert!(migrated.status.success(), "aurore migrate: {}", String::from_utf8_lossy(&migrated.stderr));
    let db = env.db().await;
    // nextval is not transactional: the first row checked at COMMIT fails it, once for good.
    db.batch_execute(
        "CREATE SEQUENCE commits_checked;
         CREATE FUNCTION fail_first_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('commits_checked') = 1 THEN
                 RAISE EXCEPTION 'the first COMMIT with dead letters fails (test)' USING ERRCODE = 'serialization_failure';
             END IF;
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER fail_first_commit AFTER INSERT ON dead_letters
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_first_commit();",
    )
    .await
    .unwrap();
    produce(&env, TOTAL).await;

    let aurore = env.spawn_aurore(&["--dead-letter-topic", dlq.as_str(), "--batch-size", "100"]);
    env.wait_persisted(TOTAL as i64, Duration::from_secs(120)).await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!(rows + dead, TOTAL as i64);
    aurore.signal("TERM");
    let checked: i64 = db.query_one("SELECT last_value FROM commits_checked", &[]).await.unwrap().get(0);
    assert_eq!(checked, dead + 1, "the trigger checked each stored dead letter once, after failing one COMMIT");

    let seen = check_copies(&env, &dlq).await;
    let repeated = seen.values().filter(|n| **n > 1).count();
    eprintln!("[dl_topic_commit] {dead} dead letters, {} copies, {repeated} repeated", seen.values().sum::<usize>());
    assert!(repeated >= 1, "the failed COMMIT's copies were delivered again by its retry");
    assert!(seen.values().all(|n| *n <= 2), "a copy repeated more than once: {seen:?}");
    assert!(
        aurore.log_text().contains("the first COMMIT with dead letters fails (test)"),
        "the failed COMMIT is logged in the server's words"
    );
}
