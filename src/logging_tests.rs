use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;

/// A writer into a shared buffer, for a scoped subscriber.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn logged(json: bool, f: impl FnOnce()) -> String {
    let buf = Buf::default();
    let writer = buf.clone();
    let builder = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_max_level(tracing::Level::TRACE);
    if json {
        tracing::subscriber::with_default(builder.with_ansi(false).event_format(JsonLines).finish(), f);
    } else {
        tracing::subscriber::with_default(builder.with_target(false).with_ansi(false).finish(), f);
    }
    buf.text()
}

fn sample() {
    let partitions = Structured::list([0, 1, 2]);
    let topics = Structured::list(["a", "b"]);
    let elapsed = std::time::Duration::from_millis(1500);
    tracing::info!(
        topic = "events",
        partitions = partitions.field(),
        topics = topics.field(),
        count = 3u64,
        delta = -2i64,
        ratio = 0.5,
        ok = true,
        elapsed = ?elapsed,
        level = "mine",
        "partitions assigned to {}",
        "me"
    );
}

#[test]
fn json_lines_carry_every_field_as_a_json_value_and_lists_as_arrays() {
    let out = logged(true, sample);
    assert_eq!(out.lines().count(), 1, "{out}");
    let line: Value = serde_json::from_str(out.trim_end()).unwrap();
    let ts = line["timestamp"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'), "{ts}");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["target"], "aurore::logging::tests");
    assert_eq!(line["message"], "partitions assigned to me");
    assert_eq!(line["topic"], "events");
    assert_eq!(line["partitions"], json!([0, 1, 2]));
    assert_eq!(line["topics"], json!(["a", "b"]));
    assert_eq!((line["count"].clone(), line["delta"].clone(), line["ratio"].clone()), (json!(3), json!(-2), json!(0.5)));
    assert_eq!(line["ok"], json!(true));
    assert_eq!(line["elapsed"], "1.5s", "a `?` field is text");
    assert_eq!(line["field_level"], "mine", "a field named like a key of the line is renamed, not repeated");
    // Keys in a fixed order: the line's own first, then the fields as written.
    let at = |key: &str| out.find(&format!("\"{key}\":")).unwrap();
    assert!(out.starts_with("{\"timestamp\":"), "{out}");
    assert!(at("level") < at("target") && at("target") < at("message") && at("message") < at("topic"), "{out}");
    assert!(at("topic") < at("partitions") && at("partitions") < at("count"), "{out}");
}

#[test]
fn the_text_format_shows_the_text_form_and_no_escape_byte() {
    let out = logged(false, || {
        sample();
        tracing::warn!(error = "bell\u{7} and \u{1b}[31mred", "escape sequences in values are not replayed");
    });
    assert!(out.contains("partitions=[0, 1, 2]") && out.contains("topics=[a, b]"), "{out}");
    assert!(!out.contains('\u{1b}'), "{out:?}");
}

#[test]
fn json_lines_escape_control_characters_and_keep_non_finite_numbers_as_text() {
    let out = logged(true, || tracing::error!(value = f64::NAN, error = "\u{1b}[31m", "x"));
    assert!(!out.contains('\u{1b}'), "{out:?}");
    let line: Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(
        (line["value"].clone(), line["error"].clone(), line["level"].clone()),
        (json!("NaN"), json!("\u{1b}[31m"), json!("ERROR"))
    );
}

#[test]
fn a_structured_value_of_objects() {
    let s = Structured::new(json!([{"partition": 0, "offset": 42}]), "0 at 42".into());
    let out = logged(true, || tracing::info!(starts = s.field(), "x"));
    let line: Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(line["starts"], json!([{"partition": 0, "offset": 42}]));
    assert_eq!(s.to_string(), "0 at 42");
}

#[test]
fn repeats_says_each_key_once_per_quiet_time() {
    let quiet = std::time::Duration::from_secs(10);
    let t0 = std::time::Instant::now();
    let at = |s: u64| t0 + std::time::Duration::from_secs(s);
    let mut r = Repeats::new(quiet);
    assert!(r.say("a", at(0)));
    assert!(!r.say("a", at(0)), "the same key at once");
    assert!(r.say("b", at(1)), "another key is its own");
    assert!(!r.say("a", at(9)), "still within the quiet time");
    assert!(r.say("a", at(10)), "said again once the quiet time is over");
    assert!(!r.say("b", at(10)));
    assert!(r.say("b", at(11)));
}

#[test]
fn repeats_stays_bounded_and_forgets_only_quiet_keys() {
    let quiet = std::time::Duration::from_secs(10);
    let t0 = std::time::Instant::now();
    let mut r = Repeats::new(quiet);
    for i in 0..Repeats::KEEP {
        assert!(r.say(&format!("old {i}"), t0));
    }
    assert!(r.say("recent", t0 + std::time::Duration::from_secs(5)));
    // Full: the keys quiet for 10 s are forgotten, the recent one is kept.
    assert!(r.say("new", t0 + std::time::Duration::from_secs(12)));
    assert!(r.said.len() <= 2, "{} keys kept", r.said.len());
    assert!(!r.say("recent", t0 + std::time::Duration::from_secs(12)));
    assert!(r.say("old 0", t0 + std::time::Duration::from_secs(12)));
}
