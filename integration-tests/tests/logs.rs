//! Logs on stderr: `--log-format json` is one JSON object a line with typed fields and lists as
//! arrays, through a consume, a rebalance and SIGTERM; text to a pipe has no escape sequences; the
//! default to a pipe is JSON; bad log settings are one line and exit 2.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use integration_tests::{Aurore, Env, aurore_bin, events, free_port, wait_until};
use serde_json::Value;

const FAST_GROUP: [&str; 4] = ["--kafka-config", "session.timeout.ms=6000", "--kafka-config", "heartbeat.interval.ms=1000"];

/// aurore whose stderr is a pipe, read line by line (raw bytes, newline removed).
struct Piped {
    aurore: Aurore,
    lines: Arc<Mutex<Vec<Vec<u8>>>>,
    reader: Option<JoinHandle<()>>,
}

impl Piped {
    /// `RUST_LOG` and `NO_COLOR` are removed, so the flags alone decide.
    fn spawn(env: &Env, extra: &[&str]) -> Piped {
        let port = free_port();
        let mut child = Command::new(aurore_bin())
            .args(env.aurore_args(port, extra))
            .env("DATABASE_URL", &env.database_url)
            .env("KAFKA_BROKERS", &env.stack.brokers)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env_remove("AURORE_LOG_FORMAT")
            .env_remove("AURORE_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning aurore");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Piped { aurore: Aurore { child, port, log: PathBuf::from("(stderr read by the test)") }, lines, reader: Some(reader) }
    }

    fn logged(&self, text: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| String::from_utf8_lossy(l).contains(text)).count()
    }

    /// SIGTERM, exit 0, and every line written until the end.
    async fn stop(mut self) -> Vec<Vec<u8>> {
        self.aurore.signal("TERM");
        let code = self.aurore.wait_exit(Duration::from_secs(40)).await;
        let reader = self.reader.take().unwrap();
        tokio::task::block_in_place(|| reader.join().unwrap());
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        assert_eq!(code, Some(0), "exit code after SIGTERM; stderr:\n{}", show(&lines));
        lines
    }
}

fn show(lines: &[Vec<u8>]) -> String {
    lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>().join("\n")
}

/// `2026-11-30T23:10:00.123456Z`: RFC 3339, UTC, microseconds.
fn is_timestamp(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 27
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z'
}

/// Every line: no escape byte, UTF-8, one JSON object with a timestamp, a level, a target and a
/// message; no field but free text (message, error, reason) holds a list written as text.
fn parse_json_lines(lines: &[Vec<u8>]) -> Vec<Value> {
    assert!(!lines.is_empty(), "nothing logged");
    lines
        .iter()
        .map(|raw| {
            let text = String::from_utf8_lossy(raw);
            assert!(!raw.contains(&0x1b), "an ESC byte in {text:?}");
            let text = std::str::from_utf8(raw).unwrap_or_else(|e| panic!("not UTF-8 ({e}): {text}"));
            let line: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
            assert!(line.is_object(), "not an object: {text}");
            assert!(line["timestamp"].as_str().is_some_and(is_timestamp), "timestamp: {text}");
            assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&line["level"].as_str().unwrap_or("")), "level: {text}");
            assert!(line["message"].as_str().is_some_and(|m| !m.is_empty()), "message: {text}");
            assert!(line["target"].as_str().is_some_and(|t| !t.is_empty()), "target: {text}");
            for (key, value) in line.as_object().unwrap() {
                if let Some(s) = value.as_str()
                    && !["message", "error", "reason"].contains(&key.as_str())
                {
                    assert!(!s.starts_with('['), "{key} is a list written as text: {text}");
                }
            }
            line
        })
        .collect()
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

fn numbers(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|n| n.as_i64().unwrap_or_else(|| panic!("not a number: {n} in {v}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_typed_fields_and_lists_as_arrays() {
    let env = Env::new("logs_json", 3, &[]).await;
    let producer = env.producer(&[]);
    env.produce(&producer, events(30, 3)).await;
    let args: Vec<&str> = ["--log-format", "json", "--log-level", "info"].into_iter().chain(FAST_GROUP).collect();
    let first = Piped::spawn(&env, &args);
    env.wait_persisted(30, Duration::from_secs(60)).await;
    // A second member joins: the first gives partitions up. It leaves: they come back.
    let mut second = env.spawn_aurore(&FAST_GROUP);
    wait_until("the first instance to log a revocation", Duration::from_secs(60), || async {
        (first.logged("partitions revoked") > 0).then_some(())
    })
    .await;
    env.produce(&producer, events(30, 3)).await;
    env.wait_persisted(60, Duration::from_secs(60)).await;
    second.signal("TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(40)).await, Some(0), "{}", second.log_text());
    wait_until("the first instance to own every partition again", Duration::from_secs(60), || async {
        let m = first.aurore.get("/metrics/prometheus")?.1;
        m.lines().any(|l| l == "kafka_assigned_partitions 3").then_some(())
    })
    .await;
    let lines = parse_json_lines(&first.stop().await);

    let with = |message: &str| with_message(&lines, message);
    let consuming = with("consuming");
    assert_eq!(consuming.len(), 1, "{lines:?}");
    assert_eq!(consuming[0]["topics"], serde_json::json!([env.topic]));
    assert_eq!(consuming[0]["group"], env.group.as_str());

    let assigned = with("partitions assigned");
    assert!(assigned.len() >= 2, "assigned at start and again after the rebalance: {assigned:?}");
    let mut all = numbers(&assigned[0]["partitions"]);
    all.sort();
    assert_eq!(all, [0, 1, 2], "the first assignment: {:?}", assigned[0]);
    for line in &assigned {
        assert_eq!(line["topic"], env.topic.as_str());
        let partitions = numbers(&line["partitions"]);
        let starts = line["starts"].as_array().unwrap_or_else(|| panic!("starts: {line:?}"));
        assert_eq!(starts.len(), partitions.len(), "{line:?}");
        for (p, start) in partitions.iter().zip(starts) {
            assert_eq!(start["partition"].as_i64(), Some(*p), "{line:?}");
            assert!(["postgresql", "kafka", "unknown"].contains(&start["from"].as_str().unwrap_or("")), "{line:?}");
            if start["from"] == "postgresql" {
                assert!(start["offset"].is_i64(), "{line:?}");
            }
        }
    }
    let revoked = with("partitions revoked");
    assert!(!revoked.is_empty());
    for line in &revoked {
        assert_eq!(line["topic"], env.topic.as_str());
        let partitions = numbers(&line["partitions"]);
        assert!(!partitions.is_empty() && partitions.iter().all(|p| (0..3).contains(p)), "{line:?}");
    }
    let stopping = with("stopping: flushing what is buffered");
    assert!(stopping.len() == 1 && stopping[0]["buffered"].is_u64(), "a count is a JSON number: {stopping:?}");
    assert_eq!(with("stopped cleanly").len(), 1);
    assert!(lines.iter().all(|l| l["level"] != "ERROR"), "{lines:?}");
    env.assert_exactly_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_pipe_have_no_escape_bytes() {
    let env = Env::new("logs_text", 1, &[]).await;
    env.produce(&env.producer(&[]), events(10, 1)).await;
    let aurore = Piped::spawn(&env, &["--log-format", "text"]);
    env.wait_persisted(10, Duration::from_secs(60)).await;
    let lines = aurore.stop().await;
    let text = show(&lines);
    assert!(!lines.iter().any(|l| l.contains(&0x1b)), "an ESC byte in text logs to a pipe:\n{text:?}");
    assert!(!lines.iter().any(|l| l.starts_with(b"{")), "text, not JSON:\n{text}");
    assert!(text.contains("partitions assigned") && text.contains("partitions=[0]"), "{text}");
    assert!(text.contains("stopped cleanly"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_settings_are_checked_at_start_and_the_default_to_a_pipe_is_json() {
    let env = Env::new("logs_flags", 1, &[]).await;
    let aurore = |args: &[&str], vars: &[(&str, &str)]| {
        let mut c = Command::new(aurore_bin());
        c.args(args).env("DATABASE_URL", &env.database_url).env_remove("RUST_LOG").env_remove("AURORE_LOG_FORMAT");
        for (k, v) in vars {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).output().expect("running aurore")
    };
    for (args, vars, says) in [
        (&["migrate", "--log-format", "xml"][..], &[][..], "--log-format (AURORE_LOG_FORMAT) must be text or json"),
        (&["--log-level", "loud", "migrate"][..], &[][..], "--log-level (AURORE_LOG_LEVEL) must be one of"),
        (&["migrate"][..], &[("AURORE_LOG_FORMAT", "yaml")][..], "must be text or json, got \"yaml\""),
        (&["migrate"][..], &[("RUST_LOG", "aurore=loud")][..], "RUST_LOG=\"aurore=loud\" is not a valid log filter"),
    ] {
        let out = aurore(args, vars);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {vars:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("aurore: invalid configuration: ") && stderr.contains(says), "{stderr}");
    }
    // No --log-format, stderr a pipe: JSON lines.
    let out = aurore(&["migrate"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Vec<u8>> = out.stderr.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    let lines = parse_json_lines(&lines);
    let done = lines.iter().find(|l| l["message"] == "database schema is up to date").expect("the migration's line");
    assert!(done["applied"].is_u64(), "{done:?}");
    // Another invalid setting, once logging is set up: one JSON error line with the exit code.
    let out = aurore(&["run", "--batch-size", "0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<Vec<u8>> = out.stderr.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    let lines = parse_json_lines(&lines);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!((lines[0]["level"].as_str(), lines[0]["exit_code"].as_u64()), (Some("ERROR"), Some(2)));
    assert!(lines[0]["message"].as_str().unwrap().contains("--batch-size must be at least 1"), "{lines:?}");
}
