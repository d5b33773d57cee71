//! Logs on stderr: text for people or JSON lines for log shippers (`--log-format`), filtered by
//! `--log-level` or, when set, `RUST_LOG`.
//!
//! Text is tracing-subscriber's own format, coloured only on a terminal. JSON lines are written by
//! [`JsonLines`], a small formatter of our own, not tracing-subscriber's `json` feature: that one
//! writes every field recorded with `%` or `?` as a string, lists included, and writes structured
//! values only through `valuable`, which tracing keeps behind the unstable `--cfg tracing_unstable`
//! (a compiler flag every build, doc run and image would have to carry). [`JsonLines`] writes
//! numbers and booleans as JSON numbers and booleans, text as strings, and a [`Structured`] field
//! (a list of partitions or topics) as the JSON value it carries.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber, writing to stderr. `settings.filter` was validated by
/// [`LogArgs::resolve`](crate::config::LogArgs::resolve).
pub fn init(settings: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // `try_init` also routes the `log` crate's records (rdkafka's, librdkafka's) here.
    let _ = match settings.format {
        LogFormat::Text => builder.with_target(false).with_ansi(settings.ansi).try_init(),
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).try_init(),
    };
}

/// A log field whose JSON form is a structured value (a list, a list of objects), with a text
/// form for people: `tracing::info!(partitions = partitions.field(), "...")`.
///
/// Why it poses as an error: tracing's `Value` trait is sealed, so a field reaches the subscriber
/// as a number, a bool, a string, something `Display` or `Debug` (which the subscriber only sees
/// as text), or a `dyn Error + 'static`. The last is the one way a value of our own type arrives
/// with its type intact: `Error` has `downcast_ref`. [`JsonLines`] downcasts it and writes its
/// JSON; the text format prints its `Display` (it has no source, so nothing more). No global
/// state and no guessing from the text: a field is structured exactly when it is a `Structured`.
#[derive(Debug)]
pub struct Structured {
    json: Value,
    text: String,
}

impl Structured {
    /// `json` in JSON lines, `text` in the text format.
    pub fn new(json: Value, text: String) -> Self {
        Structured { json, text }
    }

    /// A JSON array of the items; `[a, b, c]` as text.
    pub fn list<T: Serialize + fmt::Display>(items: impl IntoIterator<Item = T>) -> Self {
        let (mut json, mut text) = (Vec::new(), String::from("["));
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "{item}");
            json.push(serde_json::to_value(&item).unwrap_or_else(|_| Value::String(item.to_string())));
        }
        text.push(']');
        Structured { json: Value::Array(json), text }
    }

    /// The value to give a tracing macro.
    pub fn field(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}

impl fmt::Display for Structured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Structured {}

/// One JSON object a line: `timestamp` (RFC 3339, UTC, microseconds), `level`, `target`,
/// `message`, then every field of the event, in the order it was written, as a JSON value.
/// aurore logs no spans, so none are written. A field named like one of the first four is
/// written as `field_<name>`, so no key repeats.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        writeln!(writer, "{}", json_line(event, chrono::Utc::now()))
    }
}

/// The JSON line of an event (no newline).
pub fn json_line(event: &Event<'_>, now: chrono::DateTime<chrono::Utc>) -> String {
    let meta = event.metadata();
    let mut fields = JsonFields::default();
    event.record(&mut fields);
    let message = fields.message.take().unwrap_or(Value::String(String::new()));
    // A record of the `log` crate (rdkafka's) carries its real target as a field.
    let target = fields.log_target.take().unwrap_or_else(|| meta.target().to_owned());
    let mut out = String::with_capacity(256);
    out.push('{');
    let mut entry = |key: &str, value: &Value| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&Value::String(key.to_owned()).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    };
    entry("timestamp", &Value::String(now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
    entry("level", &Value::String(meta.level().as_str().to_owned()));
    entry("target", &Value::String(target));
    entry("message", &message);
    for (name, value) in &fields.fields {
        if matches!(*name, "timestamp" | "level" | "target" | "message") {
            entry(&format!("field_{name}"), value);
        } else {
            entry(name, value);
        }
    }
    out.push('}');
    out
}

#[derive(Default)]
struct JsonFields {
    message: Option<Value>,
    log_target: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl JsonFields {
    fn push(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => self.message = Some(value),
            // tracing-log's metadata of a `log` record (its target is taken in record_str).
            name if name.starts_with("log.") => {}
            name => self.fields.push((name, value)),
        }
    }
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those stay text.
        let v = serde_json::Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.push(field, v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.push(field, v);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.push(field, v);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.log_target = Some(value.to_owned());
        }
        self.push(field, Value::String(value.to_owned()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let v = match value.downcast_ref::<Structured>() {
            Some(s) => s.json.clone(),
            None => Value::String(value.to_string()),
        };
        self.push(field, v);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Value::String(format!("{value:?}")));
    }
}

/// Which log lines to say again: each distinct key (an error's text, with whatever names its
/// source) at most once per `quiet_for`. librdkafka repeats its errors: a newcomer's trial
/// counted about 97 identical "all brokers down" lines within 4 ms, every 5 s, with an
/// unreachable broker. Once it holds [`Repeats::KEEP`] keys, those quiet for `quiet_for` are
/// forgotten, so it holds no more than the distinct keys said within `quiet_for` (or `KEEP`).
#[derive(Debug)]
pub struct Repeats {
    quiet_for: Duration,
    said: HashMap<String, Instant>,
}

impl Repeats {
    /// How many keys are remembered before those quiet for `quiet_for` are forgotten.
    pub const KEEP: usize = 256;

    pub fn new(quiet_for: Duration) -> Self {
        Repeats { quiet_for, said: HashMap::new() }
    }

    /// True when `key` was not said within `quiet_for` before `now`; records it as said then.
    pub fn say(&mut self, key: &str, now: Instant) -> bool {
        if self.said.get(key).is_some_and(|at| now.duration_since(*at) < self.quiet_for) {
            return false;
        }
        if self.said.len() >= Self::KEEP {
            let quiet_for = self.quiet_for;
            self.said.retain(|_, at| now.duration_since(*at) < quiet_for);
        }
        self.said.insert(key.to_owned(), now);
        true
    }
}

#[cfg(test)]
#[path = "logging_tests.rs"]
mod tests;
