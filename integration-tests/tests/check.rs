//! `aurore check` against the real broker and PostgreSQL: a good setup passes (before and after
//! migrating), and a wrong password, a missing topic and a role without INSERT each fail with the
//! line that names the cause, exit 1, and print no password. Bad usage exits 2.

use std::process::Command;

use integration_tests::{Env, aurore_bin};

/// Runs `aurore check` on the test's topic and group: (exit code, stdout, stderr).
fn check(env: &Env, database_url: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = env.aurore_args(0, extra);
    args[0] = "check".into();
    let out = Command::new(aurore_bin())
        .args(&args)
        .env("DATABASE_URL", database_url)
        .env("KAFKA_BROKERS", &env.stack.brokers)
        .env("AURORE_LOG_FORMAT", "text")
        .output()
        .expect("running aurore check");
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    eprintln!("[check] aurore {args:?}: {:?}\n{stdout}{stderr}", out.status.code());
    (out.status.code().expect("exit code"), stdout, stderr)
}

/// The status of the line of check `name` ("ok" or "FAILED") and its text.
fn line<'a>(stdout: &'a str, name: &str) -> (&'a str, &'a str) {
    stdout
        .lines()
        .find_map(|l| {
            let (status, rest) = l.split_once(' ')?;
            let text = rest.trim_start().strip_prefix(name)?.strip_prefix(": ")?;
            Some((status, text))
        })
        .unwrap_or_else(|| panic!("no line for {name}:\n{stdout}"))
}

fn migrate(env: &Env) {
    let status = Command::new(aurore_bin()).arg("migrate").env("DATABASE_URL", &env.database_url).status().unwrap();
    assert!(status.success(), "aurore migrate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_setup_passes_before_and_after_migrating() {
    let env = Env::new("check_good", 3, &[]).await;
    let (code, out, _) = check(&env, &env.database_url, &[]);
    assert_eq!(code, 0, "{out}");
    let (status, text) = line(&out, "migrations");
    assert_eq!(status, "ok");
    assert!(text.starts_with("0 of ") && text.ends_with("(run applies them at start)"), "{text}");

    migrate(&env);
    let (code, out, err) = check(&env, &env.database_url, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().all(|l| l.starts_with("ok ")), "every line ok:\n{out}");
    assert_eq!(line(&out, &format!("topic {}", env.topic)), ("ok", "3 partition(s)"));
    assert_eq!(line(&out, "kafka broker 1").0, "ok");
    let (_, text) = line(&out, "migrations");
    assert!(text.contains(" applied") && !text.contains("pending"), "{text}");
    let (_, text) = line(&out, "tables");
    assert!(text.contains("events, dead_letters, dead_letter_counts, consumer_offsets, event_counts, topic_ids"), "{text}");
    let (_, text) = line(&out, "postgresql");
    assert!(text.contains("as role aurore") && !text.contains(":aurore@"), "{text}");
    let (_, text) = line(&out, "functions");
    assert!(text.contains("may execute pg_logical_emit_message(boolean,text,text)"), "{text}");
    let (_, text) = line(&out, "partitions");
    assert!(text.starts_with("role aurore may create and drop the partitions") && text.contains("ahead"), "{text}");
}

/// A role that may not make partitions (it owns neither table) passes while a partition holds
/// rows received now, told how far they reach; with none, ingest would wait: it fails, saying
/// what to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_may_not_make_partitions_is_told_how_far_they_reach() {
    let env = Env::new("check_parts", 1, &[]).await;
    migrate(&env);
    let tables = ["events", "dead_letters", "consumer_offsets", "event_counts", "topic_ids", "dead_letter_counts"];
    let (role, url) = env.restricted_role("it_check_parts", "parts-secret-3f9b", &tables).await;
    let (code, out, err) = check(&env, &url, &["--no-migrate"]);
    assert_eq!(code, 0, "{out}{err}");
    let (status, text) = line(&out, "partitions");
    assert_eq!(status, "ok");
    assert!(
        text.starts_with("they reach ") && text.contains(&format!("role {role} may not make more (does not own events")),
        "{text}"
    );
    env.db()
        .await
        .batch_execute(
            "DO $$ DECLARE p text; BEGIN
               FOR p IN SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'events'::regclass LOOP
                 EXECUTE 'DROP TABLE ' || p;
               END LOOP;
             END $$",
        )
        .await
        .unwrap();
    let (code, out, err) = check(&env, &url, &["--no-migrate"]);
    env.drop_role(&role).await;
    assert_eq!(code, 1, "{out}{err}");
    let (status, text) = line(&out, "partitions");
    assert_eq!(status, "FAILED");
    assert!(text.starts_with("no partition holds rows received now"), "{text}");
    assert!(text.ends_with("run `aurore migrate` as the owner of events and dead_letters"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_in_the_servers_words_and_is_never_printed() {
    let env = Env::new("check_password", 1, &[]).await;
    let password = "wrong-pw-7c1e";
    let url = env.database_url.replacen("aurore:aurore@", &format!("aurore:{password}@"), 1);
    assert_ne!(url, env.database_url, "the test rewrites the stack's credentials");
    let (code, out, err) = check(&env, &url, &[]);
    assert_eq!(code, 1, "{out}{err}");
    let (status, text) = line(&out, "postgresql");
    assert_eq!(status, "FAILED");
    assert!(text.contains("password authentication failed for user \"aurore\" (SQLSTATE 28P01)"), "{text}");
    assert!(text.ends_with("check --database-url (DATABASE_URL): host, port, user, password, database, sslmode"), "{text}");
    assert!(!out.contains(password) && !err.contains(password), "the password is printed:\n{out}{err}");
    assert!(!out.contains("migrations:"), "no migration line without a connection:\n{out}");
    assert_eq!(line(&out, "kafka").0, "ok", "the other checks still run");
    assert!(err.contains("checks failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_named() {
    let env = Env::new("check_topic", 2, &[]).await;
    let missing = format!("{}-missing", env.topic);
    let topics = format!("{},{missing}", env.topic);
    let (code, out, _) = check(&env, &env.database_url, &["--topics", &topics]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(line(&out, &format!("topic {}", env.topic)), ("ok", "2 partition(s)"));
    let (status, text) = line(&out, &format!("topic {missing}"));
    assert_eq!(status, "FAILED");
    assert!(text.starts_with("does not exist"), "{text}");
    assert_eq!(out.lines().filter(|l| l.starts_with("FAILED")).count(), 1, "only the topic fails:\n{out}");
    // The dead-letter topic is checked too.
    let (code, out, _) = check(&env, &env.database_url, &["--dead-letter-topic", &missing]);
    assert_eq!(code, 1, "{out}");
    let (status, text) = line(&out, &format!("topic {missing}"));
    assert_eq!(
        (status, text),
        ("FAILED", "does not exist; create it, or correct --dead-letter-topic (AURORE_DEAD_LETTER_TOPIC)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_insert_is_told_what_to_grant() {
    let env = Env::new("check_role", 1, &[]).await;
    migrate(&env);
    let password = "ro-secret-5d2a";
    // Reads everything, writes nothing to events and dead_letters.
    let (role, url) =
        env.restricted_role("it_check", password, &["consumer_offsets", "event_counts", "topic_ids", "dead_letter_counts"]).await;
    let (code, out, err) = check(&env, &url, &["--no-migrate"]);
    env.drop_role(&role).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(line(&out, "migrations").0, "ok", "the role may read the migration history");
    for table in ["events", "dead_letters"] {
        let (status, text) = line(&out, &format!("table {table}"));
        assert_eq!(status, "FAILED");
        assert!(text.starts_with(&format!("role {role} lacks INSERT")), "{text}");
        assert!(text.ends_with(&format!("GRANT INSERT ON {table} TO {role}")), "{text}");
    }
    assert_eq!(out.lines().filter(|l| l.starts_with("FAILED")).count(), 2, "{out}");
    assert!(!out.contains(password) && !err.contains(password), "the password is printed:\n{out}{err}");
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    for (args, says) in [
        (&["check", "--database-url", "postgres://u@h/d", "--batch-size", "0"][..], "--batch-size must be at least 1"),
        (&["check", "--database-url", "postgres://u@h/d", "--kafka-config", "group.id=x"][..], "aurore sets this itself"),
        (&["check", "--no-such-flag"][..], "unexpected argument"),
    ] {
        let out =
            Command::new(aurore_bin()).args(args).env_remove("DATABASE_URL").env("AURORE_LOG_FORMAT", "text").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_one_line_that_says_what_to_check() {
    let env = Env::new("check_broker", 1, &[]).await;
    let mut args = env.aurore_args(0, &["--kafka-brokers", "127.0.0.1:1"]);
    args[0] = "check".into();
    let out = Command::new(aurore_bin())
        .args(&args)
        .env("DATABASE_URL", &env.database_url)
        .env("AURORE_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let (status, text) = line(&stdout, "kafka");
    assert_eq!(status, "FAILED");
    assert!(
        text.starts_with("no broker of 127.0.0.1:1 answered") && text.contains("check --kafka-brokers (KAFKA_BROKERS)"),
        "{text}"
    );
    // librdkafka's own complaints stay off stderr: the summary alone (logged, then plain).
    assert!(stderr.lines().count() <= 2, "{stderr}");
    assert_eq!(line(&stdout, "postgresql").0, "ok", "the other checks still run");
}
