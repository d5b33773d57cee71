//! Issue 20: events and dead_letters partitioned by received_at. An unpartitioned database
//! migrates in place with every row; exactly once holds while partitions are created and dropped
//! during a drain, and through a crash in the middle of a retention drop.

use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::{Env, Metrics, aurore_bin, event, fast_group, wait_until};

/// Partitions attached to `table`, by name.
async fn partitions(db: &tokio_postgres::Client, table: &str) -> Vec<String> {
    db.query(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::text::regclass ORDER BY 1",
        &[&table],
    )
    .await
    .expect("listing partitions")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn exists(db: &tokio_postgres::Client, table: &str) -> bool {
    db.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await.unwrap().get(0)
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// A partition of `table` over `[now - from_h hours, now - to_h hours)` made by hand, holding
/// `rows` rows of topic `expired`, marked as aurore marks its own.
async fn old_partition(db: &tokio_postgres::Client, table: &str, name: &str, from_h: i32, to_h: i32, rows: i32) {
    let insert = match table {
        "events" => format!(
            "INSERT INTO events (topic, partition, \"offset\", id, service, event_type, occurred_at, received_at, payload)
             SELECT 'expired', 0, i, gen_random_uuid(), 'old', 'old', now(), date_trunc('hour', now()) - interval '{from_h} hours' + interval '1 second', '{{}}'
             FROM generate_series(1, {rows}) i"
        ),
        _ => format!(
            "INSERT INTO dead_letters (topic, partition, \"offset\", raw, reason, detail, received_at)
             SELECT 'expired', 0, i, 'x', 'invalid_json', 'old', date_trunc('hour', now()) - interval '{from_h} hours' + interval '1 second'
             FROM generate_series(1, {rows}) i"
        ),
    };
    db.batch_execute(&format!(
        "CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
         COMMENT ON TABLE {name} IS 'aurore: partition of {table}';
         DO $$ BEGIN
           EXECUTE format('ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM (%L) TO (%L)',
                          date_trunc('hour', now()) - interval '{from_h} hours', date_trunc('hour', now()) - interval '{to_h} hours');
         END $$;
         {insert};"
    ))
    .await
    .unwrap_or_else(|e| panic!("making {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unpartitioned_database_migrates_in_place_keeping_every_row_and_consuming_again() {
    const OLD_ROWS: i64 = 1_000_000;
    let env = Env::new("part_migrate", 3, &[]).await;
    // The schema the previous aurore left (through V7), holding a million rows of another topic
    // and the first ten messages of each partition of this test's topic, as it had stored them.
    let url: aurore::config::DatabaseUrl = env.database_url.parse().expect("database URL");
    let pool = aurore::db::pool(&url, 1, Duration::from_secs(10)).unwrap();
    aurore::db::migrate_through(&pool, Some(7)).await.expect("migrations through V7");
    let db = env.db().await;
    let fill = Instant::now();
    db.batch_execute(&format!(
        "INSERT INTO events (topic, partition, \"offset\", id, service, event_type, occurred_at, received_at, payload)
         SELECT 'before-v8', i % 4, i / 4, gen_random_uuid(), 'svc' || (i % 7), 'order.created',
                now() - (i * interval '1 second'), now() - (({OLD_ROWS} - i) * interval '1 second'),
                jsonb_build_object('i', i, 'tags', jsonb_build_array('a', 'b'))
         FROM generate_series(0, {OLD_ROWS} - 1) i;
         INSERT INTO dead_letters (topic, partition, \"offset\", raw, reason, detail, size)
         SELECT 'before-v8', 0, i, 'not json', 'invalid_json', 'expected value at line 1 column 1', 8 FROM generate_series(0, 999) i;
         INSERT INTO dead_letter_counts (topic, reason, stored) VALUES ('before-v8', 'invalid_json', 1000);"
    ))
    .await
    .expect("filling the V7 tables");
    eprintln!("[part_migrate] {OLD_ROWS} rows stored in the V7 schema in {:.1} s", fill.elapsed().as_secs_f64());
    let producer = env.producer(&[]);
    let messages = (0..90u64).map(|i| ((i % 3) as i32, Some(event("svc", "order.created", i)))).collect();
    let sent = env.produce(&producer, messages).await;
    for &(p, o) in sent.iter().filter(|(_, o)| *o < 10) {
        db.execute(
            "INSERT INTO events (topic, partition, \"offset\", id, service, event_type, occurred_at, payload)
             VALUES ($1, $2, $3, gen_random_uuid(), 'svc', 'order.created', now(), '{}')",
            &[&env.topic, &p, &o],
        )
        .await
        .unwrap();
    }
    for p in 0..3 {
        db.execute(
            "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ($1, $2, $3, 10)",
            &[&env.group, &env.topic, &p],
        )
        .await
        .unwrap();
    }

    let started = Instant::now();
    let out = Command::new(aurore_bin()).arg("migrate").env("DATABASE_URL", &env.database_url).output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "aurore migrate: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("[part_migrate] V8 and the first partition pass on {} rows took {:.2} s", OLD_ROWS + 30, took.as_secs_f64());

    assert_eq!(count(&db, "SELECT count(*) FROM events WHERE topic = 'before-v8'").await, OLD_ROWS, "every old row kept");
    assert_eq!(
        count(&db, "SELECT count(DISTINCT (payload->>'i')::int8) FROM events WHERE topic = 'before-v8'").await,
        OLD_ROWS,
        "and unchanged"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters WHERE topic = 'before-v8'").await, 1000);
    let events_parts = partitions(&db, "events").await;
    assert!(events_parts.contains(&"events_before_partitioning".to_string()), "the old table is a partition: {events_parts:?}");
    // V8's own partition, not one of aurore's: it starts where the old table ends, carries the
    // name src/partitions.rs gives, and reaches through tomorrow (UTC).
    let v8_partition: Vec<String> = db
        .query(
            "WITH b AS (SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
                          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass),
                  old AS (SELECT (regexp_match(bound, 'TO \\(''([^'']*)''\\)'))[1]::timestamptz AS upper FROM b
                          WHERE name = 'events_before_partitioning')
             SELECT name FROM b, old
              WHERE (regexp_match(bound, 'FROM \\(''([^'']*)''\\)'))[1]::timestamptz = old.upper
                AND (regexp_match(bound, 'TO \\(''([^'']*)''\\)'))[1]::timestamptz
                    >= (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'",
            &[],
        )
        .await
        .expect("reading partition bounds")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(v8_partition.len(), 1, "one partition from the old table's bound through tomorrow: {events_parts:?}");
    let stamp = v8_partition[0].strip_prefix("events_p").unwrap_or_else(|| panic!("named events_p…: {v8_partition:?}"));
    assert!(
        stamp.len() >= 15 && stamp.chars().all(|c| c.is_ascii_digit() || c == 't' || c == '_'),
        "named events_p<YYYYMMDD>t<HHMMSS>[_<µs>], as aurore names partitions: {v8_partition:?}"
    );
    assert!(partitions(&db, "dead_letters").await.contains(&"dead_letters_before_partitioning".to_string()));
    let partitioned: i64 =
        count(&db, "SELECT count(*) FROM pg_partitioned_table WHERE partrelid IN ('events'::regclass, 'dead_letters'::regclass)")
            .await;
    assert_eq!(partitioned, 2);

    // aurore resumes where the previous one stopped: offsets 10.. of each partition.
    let aurore = env.spawn_aurore(&[]);
    aurore.wait_ready(Duration::from_secs(60)).await;
    wait_until("every message of the topic stored", Duration::from_secs(60), || async {
        let n = count(&db, &format!("SELECT count(*) FROM events WHERE topic = '{}'", env.topic)).await;
        (n >= 90).then_some(())
    })
    .await;
    env.assert_exactly_once().await;
    // event_counts reads the same: only what aurore stored itself (the 60 new rows).
    assert_eq!(count(&db, "SELECT coalesce(sum(events), 0)::int8 FROM event_counts").await, 60);
    let m = Metrics::scrape(&aurore).expect("metrics");
    assert_eq!(m.get("table_partitions", &[("table", "events")]), Some(events_parts.len() as f64));
    assert!(m.get("table_partitions_bytes", &[("table", "events")]).unwrap() > 50e6, "the old table's bytes count");
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_while_partitions_are_created_and_dropped_during_a_drain() {
    let env = Env::new("part_drain", 4, &[]).await;
    // Migrated, without the partition V8 makes through tomorrow (for a rolling upgrade): aurore
    // makes every partition, one a second.
    let out = Command::new(aurore_bin())
        .args(["migrate", "--partition-interval", "1s"])
        .env("DATABASE_URL", &env.database_url)
        .output()
        .unwrap();
    assert!(out.status.success(), "aurore migrate: {}", String::from_utf8_lossy(&out.stderr));
    without_partitions(&env).await;
    let aurore = env.spawn_aurore(&["--partition-interval", "1s", "--retention", "1h", "--batch-size", "500"]);
    aurore.wait_ready(Duration::from_secs(60)).await;
    let db = env.db().await;
    let created_before = partitions(&db, "events").await.len();
    assert!(created_before >= 2, "created before consuming: {created_before}");

    let total = 60_000u64;
    let messages: Vec<(i32, Vec<u8>)> = (0..total)
        .map(|i| {
            let value = if i % 100 == 7 { b"{not json".to_vec() } else { event("svc", "order.created", i) };
            ((i % 4) as i32, value)
        })
        .collect();
    let producer = env.producer(&[]);
    let stream = env.produce_stream(&producer, messages, 2_000, Duration::from_millis(250));
    env.wait_persisted(1, Duration::from_secs(60)).await;

    // Partitions past retention appear mid-drain (made by hand: a test cannot wait an hour);
    // aurore drops them while it goes on storing.
    old_partition(&db, "events", "events_old_drain", 5, 4, 1000).await;
    old_partition(&db, "dead_letters", "dead_letters_old_drain", 5, 4, 100).await;
    let seen_at = wait_until("the partitions past retention dropped", Duration::from_secs(30), || async {
        let gone = !exists(&db, "events_old_drain").await && !exists(&db, "dead_letters_old_drain").await;
        gone.then_some(env.persisted().await)
    })
    .await;
    assert!(seen_at < total as i64, "dropped during the drain ({seen_at} of {total} persisted)");

    stream.await.unwrap();
    env.wait_persisted(total as i64, Duration::from_secs(120)).await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (total as i64 - 600, 600));
    assert_eq!(count(&db, "SELECT count(*) FROM events WHERE topic = 'expired'").await, 0);

    // Purging reads across partitions, where a row's ctid is not unique: bystanders that share
    // ctids with the purged rows (other partitions, same page positions) stay.
    db.batch_execute(
        "INSERT INTO dead_letters (topic, partition, \"offset\", raw, reason, detail)
         SELECT 'bystander', 0, i, 'x', 'invalid_json', 'kept' FROM generate_series(1, 50) i",
    )
    .await
    .unwrap();
    let out = Command::new(aurore_bin())
        .args(["dead-letters", "purge", "--older-than", "0s", "--topic", &env.topic])
        .env("DATABASE_URL", &env.database_url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.ends_with("purged 600 dead letters\n"), "{said}");
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters").await, 50, "only the bystanders are left");

    let m = Metrics::scrape(&aurore).expect("metrics");
    let created = m.get("table_partitions_created_total", &[("table", "events")]).unwrap();
    assert!(created >= 4.0, "one a second during the drain: {created}");
    assert!(m.get("table_partitions_dropped_total", &[("table", "events")]).unwrap() >= 1.0);
    assert!(m.get("table_partitions_dropped_total", &[("table", "dead_letters")]).unwrap() >= 1.0);
    eprintln!(
        "[part_drain] {created} events partitions created; flushes that found no partition: {}",
        m.get("table_partition_missing_total", &[]).unwrap_or(0.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retention_drop_interrupted_by_a_crash_is_finished_after_restart_and_nothing_is_lost() {
    let env = Env::new("part_crash", 2, &[]).await;
    let producer = env.producer(&[]);
    let batch = |from: u64| (from..from + 500).map(|i| ((i % 2) as i32, Some(event("svc", "order.created", i)))).collect();
    env.produce(&producer, batch(0)).await;
    // A killed member's partitions move on after 6 s, not Kafka's default 45.
    let args = |extra: &[&'static str]| [fast_group("classic"), extra.to_vec()].concat();
    let first = env.spawn_aurore(&args(&["--partition-interval", "1h"]));
    env.wait_persisted(500, Duration::from_secs(60)).await;
    let db = env.db().await;
    old_partition(&db, "events", "events_old_crash", 72, 71, 100).await;
    // Dead letters past retention too, counted as aurore counts what it stores; and another
    // topic's count, which their drop must leave alone.
    old_partition(&db, "dead_letters", "dead_letters_old_crash", 72, 71, 40).await;
    db.batch_execute(
        "INSERT INTO dead_letter_counts (topic, reason, stored) VALUES ('expired', 'invalid_json', 40), ('other', 'invalid_json', 5)",
    )
    .await
    .unwrap();
    // Left by a crash between DETACH and DROP (it bears the mark a retention drop sets first);
    // and one an operator detached (aurore's partition mark only): left alone.
    db.batch_execute(
        "CREATE TABLE events_detached_crash (LIKE events);
         COMMENT ON TABLE events_detached_crash IS 'aurore: retention drop of events';
         CREATE TABLE events_detached_by_hand (LIKE events);
         COMMENT ON TABLE events_detached_by_hand IS 'aurore: partition of events';",
    )
    .await
    .unwrap();
    drop(first);

    // A reader whose snapshot may still see the old partition holds DETACH … CONCURRENTLY
    // between its two transactions; aurore dies there, and so does its session.
    let holder = env.db().await;
    holder.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM events;").await.unwrap();
    let mut second = env.spawn_aurore(&args(&["--partition-interval", "1h", "--retention", "1d"]));
    wait_until("the retention drop's detach pending", Duration::from_secs(60), || async {
        let pending =
            count(&db, "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'events_old_crash'::regclass AND inhdetachpending")
                .await;
        (pending == 1).then_some(())
    })
    .await;
    second.kill9();
    let killed = count(
        &db,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%DETACH PARTITION%CONCURRENTLY%' AND pid <> pg_backend_pid()",
    )
    .await;
    assert_eq!(killed, 1, "the session running the detach");
    holder.batch_execute("COMMIT").await.unwrap();
    assert!(exists(&db, "events_old_crash").await);

    env.produce(&producer, batch(500)).await;
    let third = env.spawn_aurore(&args(&["--partition-interval", "1h", "--retention", "1d"]));
    wait_until("the interrupted drop finished", Duration::from_secs(60), || async {
        let done = !exists(&db, "events_old_crash").await
            && !exists(&db, "events_detached_crash").await
            && !exists(&db, "dead_letters_old_crash").await;
        done.then_some(())
    })
    .await;
    assert!(exists(&db, "events_detached_by_hand").await, "a table detached by hand is not aurore's to drop");
    wait_until("all 1000 messages stored", Duration::from_secs(60), || async {
        (count(&db, &format!("SELECT count(*) FROM events WHERE topic = '{}'", env.topic)).await == 1000).then_some(())
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM events WHERE topic = 'expired'").await, 0);
    assert_eq!(
        count(&db, "SELECT (sum(stored) FILTER (WHERE topic = 'expired') * 100 + sum(stored) FILTER (WHERE topic = 'other'))::int8 FROM dead_letter_counts").await,
        5,
        "the dropped dead letters leave dead_letter_counts (0 of 'expired'), the rest stays (5 of 'other')"
    );
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (1000, 0));
    assert!(third.log_text().contains("finished a partition detach that was interrupted"), "{}", third.log_text());
    let m = Metrics::scrape(&third).expect("metrics");
    // events_detached_crash went to the second process's first pass; events_old_crash to this one.
    assert!(m.get("table_partitions_dropped_total", &[("table", "events")]).unwrap() >= 1.0);
}

/// Every partition of events and dead_letters dropped: a database whose partitions aurore must make.
async fn without_partitions(env: &Env) {
    env.db()
        .await
        .batch_execute(
            "DO $$ DECLARE p text; BEGIN
               FOR p IN SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent IN ('events'::regclass, 'dead_letters'::regclass) LOOP
                 EXECUTE 'DROP TABLE ' || p;
               END LOOP;
             END $$",
        )
        .await
        .unwrap();
}

fn migrate(env: &Env, extra: &[&str]) -> std::process::Output {
    Command::new(aurore_bin()).arg("migrate").args(extra).env("DATABASE_URL", &env.database_url).output().unwrap()
}

/// The bounds are read back from PostgreSQL's text of them, which follows the session's DateStyle
/// and TimeZone: under 'SQL, DMY' and Asia/Kolkata (printed IST, which the parser reads as
/// Israel's) a misread bound would show a gap beside a partition, and creating there would fail.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_are_read_right_whatever_the_sessions_datestyle_and_timezone() {
    let env = Env::new("part_datestyle", 1, &[]).await;
    let db_name = env.database_url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    env.db()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE \"{db_name}\" SET DateStyle = 'SQL, DMY'; ALTER DATABASE \"{db_name}\" SET TimeZone = 'Asia/Kolkata'"
        ))
        .await
        .unwrap();
    let out = migrate(&env, &["--partition-interval", "1h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    without_partitions(&env).await;
    for pass in 0..3 {
        let out = migrate(&env, &["--partition-interval", "1h"]);
        assert!(out.status.success(), "pass {pass}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let db = env.db().await;
    let hourly = count(&db, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass").await;
    assert!((2..=3).contains(&hourly), "now and the next hour, made once: {hourly}");
    let url: aurore::config::DatabaseUrl = env.database_url.parse().unwrap();
    let pool = aurore::db::pool(&url, 1, Duration::from_secs(10)).unwrap();
    let client = pool.get().await.unwrap();
    let listed = aurore::partitions::list(&client, "events").await.unwrap();
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    let hour = 3_600_000_000i64;
    let this_hour = now_us / hour * hour;
    assert!(
        listed.iter().any(|p| p.range.start == Some(this_hour) && p.range.end == Some(this_hour + hour)),
        "the partition of this hour, read as UTC: {listed:?} (this hour starts at {this_hour})"
    );

    // The whole class: every DateStyle and field order, under zones whose abbreviations name
    // several places (IST, CST, PST) or whose offsets are not whole hours, read bounds with
    // microseconds, before 1970, past 2038, as the instants they are (Unix µs, from Python's
    // datetime).
    db.batch_execute(
        "CREATE TABLE events_odd_a PARTITION OF events FOR VALUES FROM ('1969-07-20 20:17:40.5+00') TO ('1969-07-20 21:00:00+00');
         CREATE TABLE events_odd_b PARTITION OF events FOR VALUES FROM ('1999-12-31 23:59:59.999999+00') TO ('2000-01-01 00:00:00.000001+00');
         CREATE TABLE events_odd_c PARTITION OF events FOR VALUES FROM ('2038-01-19 03:14:08+00') TO ('2100-02-28 23:30:00.25+00');",
    )
    .await
    .expect("partitions at odd bounds");
    let expected = [
        ("events_odd_a", -14_182_939_500_000, -14_180_400_000_000),
        ("events_odd_b", 946_684_799_999_999, 946_684_800_000_001),
        ("events_odd_c", 2_147_483_648_000_000, 4_107_540_600_250_000),
    ];
    let zones = [
        "UTC",
        "Asia/Kolkata",
        "Asia/Jerusalem",
        "America/Chicago",
        "Asia/Shanghai",
        "America/Los_Angeles",
        "Asia/Kathmandu",
        "Australia/Adelaide",
        "Pacific/Chatham",
        "America/St_Johns",
        "Pacific/Kiritimati",
        "Etc/GMT+12",
    ];
    let mut tried = 0;
    for style in ["ISO", "SQL", "Postgres", "German"] {
        for order in ["MDY", "DMY", "YMD"] {
            for zone in zones {
                client.batch_execute(&format!("SET DateStyle = '{style}, {order}'; SET TimeZone = '{zone}'")).await.unwrap();
                let listed = aurore::partitions::list(&client, "events").await.unwrap();
                for (name, start, end) in expected {
                    let p = listed.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("{name} listed: {listed:?}"));
                    assert_eq!((p.range.start, p.range.end), (Some(start), Some(end)), "{name} under {style}, {order}, {zone}");
                }
                tried += 1;
            }
        }
    }
    assert_eq!(tried, 4 * 3 * zones.len());
}

/// What V8 would lose on the way, or fail on half-way (found by a newcomer's tries): row
/// security enabled without a policy, CHECK constraints; columns other than V1–V7's, rows from
/// the future. V8 is refused before it starts, with what to do, and nothing changes; once they
/// are gone the same database migrates.
#[tokio::test(flavor = "multi_thread")]
async fn v8_refuses_what_it_would_lose_or_fail_on_half_way() {
    let env = Env::new("part_refuse", 1, &[]).await;
    let url: aurore::config::DatabaseUrl = env.database_url.parse().expect("database URL");
    let pool = aurore::db::pool(&url, 1, Duration::from_secs(10)).unwrap();
    aurore::db::migrate_through(&pool, Some(7)).await.expect("migrations through V7");
    let db = env.db().await;
    db.batch_execute(
        "INSERT INTO events (topic, partition, \"offset\", id, service, event_type, occurred_at, payload)
         VALUES ('t', 0, 0, gen_random_uuid(), 'svc', 'x', now(), '{}')",
    )
    .await
    .unwrap();
    let cases = [
        ("ALTER TABLE events ENABLE ROW LEVEL SECURITY", "ALTER TABLE events DISABLE ROW LEVEL SECURITY", "row level security"),
        (
            "ALTER TABLE dead_letters FORCE ROW LEVEL SECURITY",
            "ALTER TABLE dead_letters NO FORCE ROW LEVEL SECURITY",
            "row level security",
        ),
        (
            "ALTER TABLE events ADD CONSTRAINT short_service CHECK (length(service) < 10)",
            "ALTER TABLE events DROP CONSTRAINT short_service",
            "CHECK constraints (short_service)",
        ),
        // Whatever would make V8's ATTACH fail half-way in PostgreSQL's words: a column of the
        // other table's, another type, a NOT NULL or a column missing, a collation of its own;
        // rows received after the first partition V8 makes.
        ("ALTER TABLE events ADD COLUMN reason text", "ALTER TABLE events DROP COLUMN reason", "column reason is not aurore's"),
        (
            "ALTER TABLE dead_letters ALTER COLUMN size TYPE bigint",
            "ALTER TABLE dead_letters ALTER COLUMN size TYPE integer",
            "column size is bigint, not integer",
        ),
        (
            "ALTER TABLE events ALTER COLUMN service DROP NOT NULL",
            "ALTER TABLE events ALTER COLUMN service SET NOT NULL",
            "column service is not NOT NULL",
        ),
        (
            "ALTER TABLE events ALTER COLUMN service TYPE text COLLATE \"C\"",
            "ALTER TABLE events ALTER COLUMN service TYPE text COLLATE \"default\"",
            "column service has a collation of its own",
        ),
        ("ALTER TABLE events DROP COLUMN extra", "ALTER TABLE events ADD COLUMN extra jsonb", "column extra is missing"),
        (
            "UPDATE events SET received_at = now() + interval '3 days'",
            "UPDATE events SET received_at = now()",
            "rows received in the future",
        ),
    ];
    for (make, undo, said) in cases {
        db.batch_execute(make).await.unwrap();
        let out = migrate(&env, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{make}: {stderr}");
        assert!(
            stderr.contains("migration V8") && stderr.contains("changing nothing") && stderr.contains(said),
            "{make}: {stderr}"
        );
        let partitioned = count(&db, "SELECT count(*) FROM pg_partitioned_table").await;
        let applied = count(&db, "SELECT count(*) FROM refinery_schema_history WHERE version = 8").await;
        assert_eq!((partitioned, applied), (0, 0), "{make}: nothing changed");
        db.batch_execute(undo).await.unwrap();
    }
    // V8's own refusals (here a view), in PostgreSQL's words once per line, not refinery's
    // chain repeated ("`error applying migration …`, `db error`: …").
    db.batch_execute("CREATE VIEW events_view AS SELECT * FROM events").await.unwrap();
    let out = migrate(&env, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("views read it (events_view)"), "{stderr}");
    for line in stderr.lines().filter(|l| l.contains("views read it")) {
        assert_eq!(line.matches("error applying migration").count(), 1, "{line}");
        assert!(!line.contains("db error"), "{line}");
    }
    db.batch_execute("DROP VIEW events_view").await.unwrap();
    let out = migrate(&env, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM pg_partitioned_table").await, 2);
}

/// Maintenance that cannot run (a role that does not own the tables) leaves rows without a
/// partition: they wait, counted, and are stored once the owner makes the partitions; none is
/// dead-lettered, none is lost.
#[tokio::test(flavor = "multi_thread")]
async fn rows_without_a_partition_wait_for_it_and_are_never_dead_lettered() {
    let env = Env::new("part_missing", 2, &[]).await;
    let out = migrate(&env, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    without_partitions(&env).await;
    let (role, url) = env
        .restricted_role(
            "it_nopart",
            "nopart",
            &["events", "dead_letters", "consumer_offsets", "event_counts", "topic_ids", "dead_letter_counts"],
        )
        .await;
    let producer = env.producer(&[]);
    let messages = (0..200u64)
        .map(|i| ((i % 2) as i32, Some(if i % 50 == 3 { b"{bad".to_vec() } else { event("svc", "order.created", i) })))
        .collect();
    env.produce(&producer, messages).await;
    let aurore = integration_tests::Aurore::spawn_with(
        &env,
        &["--no-migrate", "--retry-backoff", "50ms", "--retry-backoff-max", "500ms"],
        integration_tests::free_port(),
        &url,
    );
    let started = Instant::now();
    let missing = wait_until("flushes finding no partition", Duration::from_secs(60), || async {
        let m = Metrics::scrape(&aurore)?;
        let n = m.get("table_partition_missing_total", &[])?;
        (n >= 8.0).then_some(n)
    })
    .await;
    // Each of those flushes wakes a maintenance pass, which fails here: after a failure, the next
    // comes 10 s on at the soonest (the first pass at start, one woken at once, then one per 10 s).
    let m = Metrics::scrape(&aurore).unwrap();
    let failed = m.get("table_partition_maintenance_errors_total", &[]).unwrap();
    let bound = 2.0 + (started.elapsed().as_secs() / 10) as f64;
    assert!(failed <= bound, "{failed} failed passes for {missing} flushes in {:?}", started.elapsed());
    let db = env.db().await;
    assert_eq!(env.persisted().await, 0, "nothing stored, nothing dead-lettered ({missing} flushes waited)");
    let m = Metrics::scrape(&aurore).unwrap();
    assert!(m.get("table_partition_maintenance_errors_total", &[]).unwrap() >= 1.0, "the failing maintenance is counted");
    assert_eq!(m.get("table_partitions_ahead_seconds", &[("table", "events")]), Some(0.0));

    // The owner makes the partitions (as `aurore migrate` does); the rows waiting are stored.
    let out = migrate(&env, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.wait_persisted(200, Duration::from_secs(60)).await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (196, 4));
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters WHERE reason = 'postgres_rejected'").await, 0);
    drop(aurore);
    env.drop_role(&role).await;
}

/// `aurore migrate` waits for the maintenance lock a running instance holds (which may be one
/// that cannot create partitions), then makes its own pass: it never returns with the partitions
/// left to the holder. (A CI run caught the old skip: migrate ran while a restricted role's
/// failing pass held the lock, and the rows of the test above waited on.)
#[tokio::test(flavor = "multi_thread")]
async fn migrate_waits_for_the_maintenance_lock_and_makes_the_partitions_itself() {
    let env = Env::new("part_lock", 1, &[]).await;
    let out = migrate(&env, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    without_partitions(&env).await;
    let holder = env.db().await;
    // The creation pass's lock (MAINTENANCE_LOCK, "aurorp", src/partitions.rs), as a running
    // instance's pass holds it.
    holder.batch_execute("SELECT pg_advisory_lock(107157058974320)").await.unwrap();
    let mut child = Command::new(aurore_bin())
        .arg("migrate")
        .env("DATABASE_URL", &env.database_url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let db = env.db().await;
    wait_until("aurore migrate waiting for the advisory lock", Duration::from_secs(30), || async {
        let n = count(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
        )
        .await;
        (n == 1).then_some(())
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "migrate returned while the lock was held");
    assert!(partitions(&db, "events").await.is_empty());
    holder.batch_execute("SELECT pg_advisory_unlock(107157058974320)").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "aurore migrate did not exit within 60 s of the lock's release");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A row received now finds its partition in both tables (rolled back).
    db.batch_execute(
        "BEGIN;
         INSERT INTO events (topic, partition, \"offset\", id, service, event_type, occurred_at, payload)
           VALUES ('t', 0, 0, gen_random_uuid(), 's', 'e', now(), '{}');
         INSERT INTO dead_letters (topic, partition, \"offset\", reason, detail) VALUES ('t', 0, 0, 'invalid_json', 'd');
         ROLLBACK",
    )
    .await
    .expect("a partition of each table holds now");
}

/// The database at `url` migrated through `version`, holding one event and one dead letter.
async fn one_row_each_through(url: &str, version: i32) -> tokio_postgres::Client {
    let parsed: aurore::config::DatabaseUrl = url.parse().expect("database URL");
    let pool = aurore::db::pool(&parsed, 1, Duration::from_secs(10)).unwrap();
    aurore::db::migrate_through(&pool, Some(version)).await.unwrap_or_else(|e| panic!("migrations through V{version}: {e}"));
    drop(pool);
    let db = integration_tests::connect(url).await;
    db.batch_execute(
        "INSERT INTO events (topic, partition, \"offset\", id, service, event_type, occurred_at, payload)
           VALUES ('t', 0, 0, gen_random_uuid(), 'svc', 'x', now(), '{}');
         INSERT INTO dead_letters (topic, partition, \"offset\", raw, reason, detail) VALUES ('t', 0, 1, 'x', 'invalid_json', 'd')",
    )
    .await
    .unwrap();
    db
}

/// A database left by an aurore older than V7 migrates all the way: V8's preflight looks at the
/// tables as V7 leaves them (dead_letters gains three columns there), not as they are before.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_older_than_v7_migrates_through_v8() {
    let env = Env::new("part_v6", 1, &[]).await;
    let db = one_row_each_through(&env.database_url, 6).await;
    let out = migrate(&env, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM pg_partitioned_table").await, 2);
    assert_eq!(count(&db, "SELECT max(version)::int8 FROM refinery_schema_history").await, 8);
}

/// A table that is no partition but has the name of one to create (left by hand, or by a
/// restore) does not stall ingest: the partition is named otherwise, with a warning, and the
/// table in the way is left as it was (a newcomer's finding #6).
#[tokio::test(flavor = "multi_thread")]
async fn a_table_in_the_way_of_a_partition_is_left_alone_and_the_partition_named_otherwise() {
    let env = Env::new("part_in_the_way", 2, &[]).await;
    let out = migrate(&env, &["--partition-interval", "2s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    without_partitions(&env).await;
    let db = env.db().await;
    // Every name the 2-second partitions of the next two minutes would take (starts are whole
    // multiples of the interval since the epoch, as the database's clock tells).
    db.batch_execute(
        "DO $$ DECLARE t timestamptz := to_timestamp(floor(extract(epoch FROM now()) / 2) * 2); BEGIN
           FOR k IN 0..60 LOOP
             EXECUTE format('CREATE TABLE %I (note text); INSERT INTO %1$I VALUES (''kept'')',
                            'events_p' || to_char((t + k * interval '2 s') AT TIME ZONE 'UTC', 'YYYYMMDD\"t\"HH24MISS'));
           END LOOP;
         END $$",
    )
    .await
    .unwrap();
    let aurore = env.spawn_aurore(&["--partition-interval", "2s"]);
    aurore.wait_ready(Duration::from_secs(60)).await;
    let total = 6_000u64;
    let messages: Vec<(i32, Vec<u8>)> = (0..total).map(|i| ((i % 2) as i32, event("svc", "order.created", i))).collect();
    let producer = env.producer(&[]);
    env.produce_stream(&producer, messages, 1_000, Duration::from_millis(1_000)).await.unwrap();
    env.wait_persisted(total as i64, Duration::from_secs(60)).await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (total as i64, 0));

    let named: Vec<String> = partitions(&db, "events").await;
    assert!(named.iter().any(|n| n.ends_with("_2")), "partitions named otherwise: {named:?}");
    let kept = count(
        &db,
        "SELECT count(*) FROM pg_class c WHERE c.relname ~ '^events_p[0-9]{8}t[0-9]{6}$' AND c.relkind = 'r'
           AND NOT c.relispartition AND (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0) = 1",
    )
    .await;
    assert_eq!(kept, 61, "every table in the way is left as it was");
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, total as i64);
    let log = aurore.log_text();
    assert!(log.contains("has the name of the partition to create (left over?)"), "{log}");
    let m = Metrics::scrape(&aurore).expect("metrics");
    assert_eq!(m.get("table_partition_maintenance_errors_total", &[]).unwrap_or(0.0), 0.0);
}

/// The V8 preflight (`db::before_partitioning`) against V8 itself, on PostgreSQL: every change
/// of one column of a V7 table that PostgreSQL can make (dropped, NOT NULL dropped, another type,
/// another collation, another default, a column added, the other table's columns among them),
/// each alone and in random pairs, and rows received in the future. For each, in a fresh V7
/// database holding a row a table, V8's SQL is run bare in a transaction rolled back, and
/// `aurore migrate` (preflight, then V8): the preflight must refuse, changing nothing, exactly
/// where bare V8 fails, and where V8 succeeds so must migrate, keeping every row.
#[tokio::test(flavor = "multi_thread")]
async fn the_v8_preflight_refuses_exactly_what_v8_fails_on() {
    let env = Env::new("part_v8_diff", 1, &[]).await;
    let admin = integration_tests::connect(&integration_tests::stack().admin_url).await;
    let base = env.database_url.rsplit_once('/').unwrap().0.to_string();
    let db = env.db().await;
    let url: aurore::config::DatabaseUrl = env.database_url.parse().expect("database URL");
    aurore::db::migrate_through(&aurore::db::pool(&url, 1, Duration::from_secs(10)).unwrap(), Some(7)).await.unwrap();
    // The columns V7 leaves, as PostgreSQL tells them: the generator's input.
    let columns: Vec<(String, String, String, bool)> = db
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable = 'NO' FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name IN ('events', 'dead_letters') ORDER BY table_name, ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let other_type = |t: &str| match t {
        "text" => Some("varchar(500)"),
        "integer" => Some("bigint"),
        "bigint" => Some("numeric"),
        "uuid" => Some("text"),
        "timestamp with time zone" => Some("timestamp"),
        "jsonb" => Some("json"),
        "bytea" => None,
        _ => None,
    };
    let mut single = Vec::new();
    for (table, column, ty, not_null) in &columns {
        let alter = |what: String| format!("ALTER TABLE {table} {what}");
        single.push(alter(format!("DROP COLUMN \"{column}\"")));
        if *not_null {
            single.push(alter(format!("ALTER COLUMN \"{column}\" DROP NOT NULL")));
        }
        if let Some(other) = other_type(ty) {
            single.push(alter(format!("ALTER COLUMN \"{column}\" TYPE {other}")));
        }
        if ty == "text" {
            single.push(alter(format!("ALTER COLUMN \"{column}\" TYPE text COLLATE \"C\"")));
            single.push(alter(format!("ALTER COLUMN \"{column}\" SET DEFAULT 'x'")));
        }
        if ty == "timestamp with time zone" {
            single.push(alter(format!("ALTER COLUMN \"{column}\" SET DEFAULT now() - interval '1 hour'")));
        }
    }
    for table in ["events", "dead_letters"] {
        single.push(format!("ALTER TABLE {table} ADD COLUMN note text"));
        for (other, column, ty, _) in &columns {
            if other != table && !columns.iter().any(|(t, c, _, _)| t == table && c == column) {
                single.push(format!("ALTER TABLE {table} ADD COLUMN \"{column}\" {ty}"));
            }
        }
    }
    single.push("UPDATE events SET received_at = now() + interval '3 days'".into());
    single.push("UPDATE dead_letters SET received_at = now() + interval '3 days'".into());
    single.push(String::new());
    let mut rng = fastrand::Rng::with_seed(20);
    let mut cases: Vec<Vec<String>> = single.iter().map(|m| vec![m.clone()]).collect();
    for _ in 0..24 {
        cases.push(vec![single[rng.usize(..single.len())].clone(), single[rng.usize(..single.len())].clone()]);
    }
    let v8 = include_str!("../../migrations/V8__partitioned_by_received_at.sql");
    let (mut refused, mut migrated) = (0, 0);
    for (i, changes) in cases.iter().enumerate() {
        let name = format!("aurore_it_{}_{i}", env.name);
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        let case_url = format!("{base}/{name}");
        let case = one_row_each_through(&case_url, 7).await;
        let mut applied = true;
        for change in changes.iter().filter(|c| !c.is_empty()) {
            // A change PostgreSQL refuses (a type the row cannot take, a column already gone) is no case.
            applied &= case.batch_execute(change).await.is_ok();
        }
        if applied {
            let bare = case.batch_execute(&format!("BEGIN; {v8}")).await;
            case.batch_execute("ROLLBACK").await.unwrap();
            let out = Command::new(aurore_bin()).arg("migrate").env("DATABASE_URL", &case_url).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let partitioned = count(&case, "SELECT count(*) FROM pg_partitioned_table").await;
            match &bare {
                Err(e) => {
                    assert_eq!(out.status.code(), Some(1), "{changes:?}: bare V8 failed ({e}), migrate did not: {stderr}");
                    // Refused in aurore's words (the preflight, or V8's own checks), not failed
                    // half-way in PostgreSQL's.
                    let told = stderr.contains("changing nothing") || stderr.contains("by received_at) stops: ");
                    assert!(told, "{changes:?}: {stderr}");
                    assert_eq!(partitioned, 0, "{changes:?}: nothing changed");
                    refused += 1;
                }
                Ok(()) => {
                    assert!(out.status.success(), "{changes:?}: bare V8 succeeded, migrate refused: {stderr}");
                    assert_eq!(partitioned, 2, "{changes:?}");
                    let rows = count(&case, "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM dead_letters)").await;
                    assert_eq!(rows, 2, "{changes:?}: every row kept");
                    migrated += 1;
                }
            }
        }
        drop(case);
        // Not WITH (FORCE): that refuses when an autovacuum worker is in the database (its role
        // is none this role may signal); a plain DROP stops the worker itself, and waits for the
        // case's own connection to be gone.
        wait_until(&format!("database {name} dropped"), Duration::from_secs(30), || async {
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\"")).await.ok()
        })
        .await;
    }
    eprintln!("[part_v8_diff] {} cases: {refused} refused by both, {migrated} migrated by both", cases.len());
    assert!(refused >= 20 && migrated >= 5, "both sides exercised: {refused} refused, {migrated} migrated");
}
