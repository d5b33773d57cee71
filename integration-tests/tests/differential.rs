//! aurore's validator against PostgreSQL's own input functions (`::timestamptz`, `::jsonb`), on
//! inputs generated to cover each class by construction: RFC 3339 timestamps, JSON numbers and
//! JSON strings, at least 10,000 of each. For every input, aurore stores exactly what PostgreSQL
//! reads, or dead-letters what PostgreSQL refuses, with the right reason; where aurore is
//! stricter than PostgreSQL, the rule it follows is named (and documented in the README's event
//! format). A disagreement prints the input and the seed (`AURORE_DIFF_SEED` reruns it).

use std::fmt::Write as _;

use aurore::event::{self, Reject};
use integration_tests::{connect, stack};

const PER_CLASS: usize = 10_000;

fn seed() -> u64 {
    std::env::var("AURORE_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_2026)
}

/// aurore's verdict on a message.
fn aurore(json: &[u8]) -> Result<event::Event<'_>, Reject> {
    event::decode(Some(json), 1 << 20).map_err(|e| e.reason)
}

/// Runs `f(text)` in PostgreSQL for each input, NULL where it raises: one answer per input.
async fn postgres(db: &tokio_postgres::Client, function: &str, inputs: &[String]) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(2_000) {
        let rows = db
            .query(
                &format!("SELECT pg_temp.{function}(x) FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n) ORDER BY n"),
                &[&chunk],
            )
            .await
            .expect("asking PostgreSQL");
        out.extend(rows.iter().map(|r| r.get::<_, Option<String>>(0)));
    }
    out
}

/// The stack's PostgreSQL, or `AURORE_DIFF_DATABASE_URL`'s (to compare with another version).
async fn client() -> tokio_postgres::Client {
    let url = std::env::var("AURORE_DIFF_DATABASE_URL").unwrap_or_else(|_| stack().admin_url.clone());
    let db = connect(&url).await;
    db.batch_execute(
        "SET timezone = 'UTC';
         CREATE FUNCTION pg_temp.ts(t text) RETURNS text LANGUAGE plpgsql AS
           $$ BEGIN RETURN ((extract(epoch FROM t::timestamptz) * 1000000)::int8)::text; EXCEPTION WHEN others THEN RETURN NULL; END $$;
         CREATE FUNCTION pg_temp.jsonb(t text) RETURNS text LANGUAGE plpgsql AS
           $$ BEGIN RETURN (t::jsonb)::text; EXCEPTION WHEN others THEN RETURN NULL; END $$;",
    )
    .await
    .expect("creating the probes");
    db
}

/// Disagreements, reported together with the seed.
struct Report {
    class: &'static str,
    seed: u64,
    bad: Vec<String>,
    stricter: usize,
}

impl Report {
    fn new(class: &'static str) -> Self {
        Report { class, seed: seed(), bad: Vec::new(), stricter: 0 }
    }

    fn disagree(&mut self, input: &str, what: String) {
        if self.bad.len() < 20 {
            self.bad.push(format!("{input:.200}: {what}"));
        } else {
            self.bad.push(String::new());
        }
    }

    fn finish(self, n: usize) {
        eprintln!(
            "[differential] {}: {n} inputs, {} refused by a stricter documented rule, seed {}",
            self.class, self.stricter, self.seed
        );
        assert!(
            self.bad.is_empty(),
            "{} disagreements with PostgreSQL on {} (seed {}; AURORE_DIFF_SEED={} reruns):\n{}",
            self.bad.len(),
            self.class,
            self.seed,
            self.seed,
            self.bad.iter().filter(|b| !b.is_empty()).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamps

/// Random decimal digits, as many as drawn from `len`.
fn digits(rng: &mut fastrand::Rng, len: impl std::ops::RangeBounds<usize>) -> String {
    let n = rng.usize(len);
    (0..n).map(|_| char::from(b'0' + rng.u8(..10))).collect()
}

/// An RFC 3339-shaped time, every field drawn across and just past its range, and the
/// fractions that round across a second.
fn timestamp(rng: &mut fastrand::Rng) -> String {
    let year = [rng.i64(1900..=2100), rng.i64(0..=9999), 0, 1, 1899, 1900, 1970, 2000, 9999][rng.usize(..9)];
    let month = if rng.u8(..10) == 0 { rng.u8(0..=13) } else { rng.u8(1..=12) };
    let day = if rng.u8(..10) == 0 { rng.u8(0..=32) } else { rng.u8(1..=31) };
    let hour = if rng.u8(..10) == 0 { rng.u8(0..=25) } else { rng.u8(0..=23) };
    let minute = if rng.u8(..10) == 0 { rng.u8(0..=60) } else { rng.u8(0..=59) };
    let second = if rng.u8(..10) == 0 { rng.u8(58..=61) } else { rng.u8(0..=59) };
    let fraction = match rng.u8(..6) {
        0 => String::new(),
        1 => format!(".{}", digits(rng, 0..=12)),
        // Just below, at and above a half microsecond; nines that carry into the next second.
        2 => format!(".{}{}{}", digits(rng, 6..=6), ["4", "5", "6"][rng.usize(..3)], digits(rng, 0..=5)),
        3 => format!(".{}{}", "9".repeat(rng.usize(6..=12)), digits(rng, 0..=2)),
        4 => format!(".{}5", "0".repeat(rng.usize(5..=11))),
        _ => format!(".{}", digits(rng, 1..=9)),
    };
    let zone = match rng.u8(..8) {
        0 => "z".to_string(),
        1 => ["+24:00", "+00:60", "-00:00", "+0100", "", "+23:59", "-23:59", "UTC"][rng.usize(..8)].to_string(),
        2 | 3 => format!("{}{:02}:{:02}", ["+", "-"][rng.usize(..2)], rng.u8(..24), rng.u8(..60)),
        _ => "Z".to_string(),
    };
    let sep = ["T", "T", "T", "t", " "][rng.usize(..5)];
    format!("{year:04}-{month:02}-{day:02}{sep}{hour:02}:{minute:02}:{second:02}{fraction}{zone}")
}

/// RFC 3339's grammar and field ranges (section 5.6, a space allowed between date and time as its note
/// says), which aurore documents it requires;
/// PostgreSQL reads many more forms.
fn rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> { s.get(r)?.parse().ok().filter(|_| true) };
    let digits_at = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if !(digits_at(0..4) && digits_at(5..7) && digits_at(8..10) && digits_at(11..13) && digits_at(14..16) && digits_at(17..19)) {
        return false;
    }
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return false;
    }
    let (year, month, day) = (num(0..4).unwrap(), num(5..7).unwrap(), num(8..10).unwrap());
    let (hour, minute, second) = (num(11..13).unwrap(), num(14..16).unwrap(), num(17..19).unwrap());
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > days[month as usize - 1] || hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut at = 19;
    if b.get(at) == Some(&b'.') {
        let n = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        at += 1 + n;
    }
    match &s[at..] {
        "Z" | "z" => true,
        z if z.len() == 6 && matches!(&z[..1], "+" | "-") && &z[3..4] == ":" => {
            digits_at(at + 1..at + 3)
                && digits_at(at + 4..at + 6)
                && num(at + 1..at + 3).unwrap() <= 23
                && num(at + 4..at + 6).unwrap() <= 59
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_agree_with_postgresql() {
    let db = client().await;
    let mut rng = fastrand::Rng::with_seed(seed());
    let inputs: Vec<String> = (0..PER_CLASS).map(|_| timestamp(&mut rng)).collect();
    let pg = postgres(&db, "ts", &inputs).await;
    let mut report = Report::new("timestamps");
    for (s, pg) in inputs.iter().zip(pg) {
        let json = format!(r#"{{"service":"s","event_type":"t","timestamp":"{s}"}}"#);
        let pg: Option<i64> = pg.map(|v| v.parse().unwrap());
        match (aurore(json.as_bytes()).map(|e| e.timestamp_micros), pg) {
            (Ok(Some(a)), Some(p)) if a == p => {}
            (Ok(a), p) => report.disagree(s, format!("aurore stores {a:?}, PostgreSQL reads {p:?}")),
            (Err(Reject::InvalidTimestamp), None) => {}
            (Err(Reject::TimestampOutOfRange), None) => {}
            (Err(Reject::InvalidTimestamp), Some(_)) if !rfc3339(s) => report.stricter += 1,
            (Err(Reject::TimestampOutOfRange), Some(p))
                if !(event::MIN_TIMESTAMP_MICROS..=event::MAX_TIMESTAMP_MICROS).contains(&p) =>
            {
                report.stricter += 1
            }
            (Err(r), p) => report.disagree(s, format!("aurore refuses ({}), PostgreSQL reads {p:?}", r.label())),
        }
    }
    report.finish(inputs.len());
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// A number literal: JSON's grammar and just outside it; mantissas long and short, with leading
/// and trailing zeros; exponents across numeric's limits (scale 16,383, weight 131,072 digits,
/// `INT_MAX / 2`).
fn number(rng: &mut fastrand::Rng) -> String {
    let mut s = String::new();
    if rng.bool() {
        s.push('-');
    }
    let zeros =
        |rng: &mut fastrand::Rng, n: usize| -> String { (0..n).map(|_| if rng.u8(..4) == 0 { '1' } else { '0' }).collect() };
    match rng.u8(..8) {
        0 => s.push('0'),
        1 => s.push_str(&format!("0{}", digits(rng, 1..3))), // leading zero: not JSON
        2 => {
            s.push(char::from(b'1' + rng.u8(..9)));
            let long = rng.u8(..50) == 0;
            s.push_str(&if long { digits(rng, 131_060..131_080) } else { digits(rng, 0..30) });
        }
        _ => {
            s.push(char::from(b'1' + rng.u8(..9)));
            s.push_str(&digits(rng, 0..20));
        }
    }
    match rng.u8(..6) {
        0 | 1 => {}
        2 => s.push('.'), // no digits after the point: not JSON
        3 => {
            s.push('.');
            let n = [rng.usize(1..40), rng.usize(16_375..16_395)][usize::from(rng.u8(..20) == 0)];
            let frac = zeros(rng, n);
            s.push_str(&frac);
        }
        _ => {
            s.push('.');
            s.push_str(&digits(rng, 1..25));
        }
    }
    if rng.u8(..3) > 0 {
        s.push(['e', 'E'][rng.usize(..2)]);
        match rng.u8(..4) {
            0 => s.push('+'),
            1 => s.push('-'),
            _ => {}
        }
        let edges = [
            "16383",
            "16384",
            "16382",
            "131071",
            "131072",
            "131073",
            "1073741822",
            "1073741823",
            "99999999999999999999",
            "0",
            "00017",
        ];
        match rng.u8(..5) {
            0 => {}
            1 | 2 => s.push_str(edges[rng.usize(..edges.len())]),
            _ => s.push_str(&rng.u32(0..400_000).to_string()),
        }
    }
    s
}

/// JSON's number grammar (RFC 8259, section 6).
fn json_number(s: &str) -> bool {
    let b = s.strip_prefix('-').unwrap_or(s).as_bytes();
    let int = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int == 0 || (b[0] == b'0' && int > 1) {
        return false;
    }
    let mut at = int;
    if b.get(at) == Some(&b'.') {
        let n = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        at += 1 + n;
    }
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(b.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let n = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        at += n;
    }
    at == b.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_agree_with_postgresql() {
    let db = client().await;
    let mut rng = fastrand::Rng::with_seed(seed());
    let inputs: Vec<String> = (0..PER_CLASS).map(|_| number(&mut rng)).collect();
    let pg = postgres(&db, "jsonb", &inputs).await;
    let mut report = Report::new("numbers");
    for (n, pg) in inputs.iter().zip(pg) {
        // As a payload, and inside one (the fast path and the storability scan both see it).
        for json in [
            format!(r#"{{"service":"s","event_type":"t","payload":{n}}}"#),
            format!(r#"{{"service":"s","event_type":"t","payload":{{"a":[{n}]}}}}"#),
        ] {
            match (aurore(json.as_bytes()), &pg) {
                (Ok(_), Some(_)) => {}
                (Ok(_), None) => report.disagree(n, "aurore stores it, PostgreSQL refuses it".into()),
                (Err(Reject::NumberOutOfRange), None) if json_number(n) => {}
                (Err(Reject::InvalidJson), None) if !json_number(n) => {}
                (Err(r), p) => report.disagree(
                    n,
                    format!("aurore refuses ({}), PostgreSQL: {}", r.label(), if p.is_some() { "takes it" } else { "refuses" }),
                ),
            }
        }
    }
    report.finish(inputs.len());
}

// ---------------------------------------------------------------------------------------------
// Strings

/// A JSON string literal: plain and multi-byte text, every short escape, `\u` escapes of every
/// kind (NUL, lone and paired surrogates in either order, U+FFFF, lower and upper hex, bad hex),
/// raw control characters and raw NUL.
fn string(rng: &mut fastrand::Rng) -> String {
    let mut s = String::from("\"");
    for _ in 0..rng.usize(0..8) {
        match rng.u8(..16) {
            0 => s.push_str(["a", "Zz 9", "é", "日本", "😀", "\u{ffff}", "\u{fffe}", "\u{10ffff}", "\u{feff}"][rng.usize(..9)]),
            1 => s.push_str(["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"][rng.usize(..8)]),
            2 => s.push_str("\\u0000"),
            3 => write!(s, "\\u{:04x}", rng.u16(0xd800..0xe000)).unwrap(),
            4 => write!(s, "\\u{:04X}\\u{:04x}", rng.u16(0xd800..0xdc00), rng.u16(0xdc00..0xe000)).unwrap(),
            5 => write!(s, "\\u{:04x}\\u{:04x}", rng.u16(0xdc00..0xe000), rng.u16(0xd800..0xdc00)).unwrap(),
            6 => write!(s, "\\u{:04x}", rng.u16(..)).unwrap(),
            7 => s.push_str(["\\uffff", "\\uFFFE", "\\u00e9", "\\u12G4", "\\x41", "\\u", "\\'"][rng.usize(..7)]),
            8 => s.push(char::from(rng.u8(1..0x20))),
            9 => s.push('\0'),
            10 => s.push_str("\\u0000"[..rng.usize(1..6)].as_ref()),
            _ => s.push_str(&"abc xyz".repeat(rng.usize(1..3))),
        }
    }
    s.push('"');
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_agree_with_postgresql() {
    let db = client().await;
    let mut rng = fastrand::Rng::with_seed(seed());
    let inputs: Vec<String> = (0..PER_CLASS).map(|_| string(&mut rng)).collect();
    // PostgreSQL's text cannot hold NUL: a raw NUL is refused before jsonb sees it.
    let sendable: Vec<String> = inputs.iter().map(|s| if s.contains('\0') { "!".into() } else { s.clone() }).collect();
    let pg = postgres(&db, "jsonb", &sendable).await;
    let mut report = Report::new("strings");
    for (s, pg) in inputs.iter().zip(pg) {
        // As a value, as a key, as an unknown top-level field, and as the service name.
        let shapes = [
            (format!(r#"{{"service":"s","event_type":"t","payload":{s}}}"#), false),
            (format!(r#"{{"service":"s","event_type":"t","payload":{{{s}:1}}}}"#), false),
            (format!(r#"{{"service":"s","event_type":"t","note":[{s}]}}"#), false),
            (format!(r#"{{"service":{s},"event_type":"t"}}"#), true),
        ];
        for (json, is_name) in shapes {
            let verdict = aurore(json.as_bytes());
            match (&verdict, &pg) {
                (Ok(e), Some(p)) if is_name => {
                    // The name is stored as text: what PostgreSQL reads of the string.
                    let want: String = serde_json::from_str(p).unwrap();
                    if e.service != want {
                        report.disagree(s, format!("aurore stores service {:?}, PostgreSQL reads {want:?}", e.service));
                    }
                }
                (Ok(_), Some(_)) => {}
                (Ok(_), None) => report.disagree(s, "aurore stores it, PostgreSQL refuses it".into()),
                (Err(Reject::InvalidJson | Reject::NulCharacter | Reject::LoneSurrogate), None) => {}
                // Names are stricter: not empty, at most 128 characters, no NUL.
                (Err(Reject::EmptyField | Reject::FieldTooLong | Reject::NulCharacter), Some(_)) if is_name => {
                    report.stricter += 1
                }
                (Err(r), p) => report.disagree(
                    s,
                    format!("aurore refuses ({}), PostgreSQL: {}", r.label(), if p.is_some() { "takes it" } else { "refuses" }),
                ),
            }
        }
    }
    // Bytes that are not UTF-8 cannot reach PostgreSQL's text (a UTF8 database) at all: the
    // strings again with bytes overwritten at random (truncated sequences, bare continuation
    // bytes, encoded surrogates, beyond U+10FFFF, overlong forms). aurore must say not_utf8
    // exactly when Rust's (strict) UTF-8 check does, and may take nothing else.
    let invalid = [&b"\x80"[..], b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xff", b"\xe2\x82"];
    let mut mangled = 0;
    for s in &inputs {
        let mut bytes = format!(r#"{{"service":"s","event_type":"t","payload":{s}}}"#).into_bytes();
        let at = rng.usize(40..bytes.len());
        let bad = invalid[rng.usize(..invalid.len())];
        bytes.splice(at..at, bad.iter().copied());
        let utf8 = std::str::from_utf8(&bytes).is_ok();
        mangled += usize::from(!utf8);
        match aurore(&bytes) {
            Err(Reject::NotUtf8) if !utf8 => {}
            Err(r) if utf8 && r != Reject::NotUtf8 => {}
            Ok(_) if utf8 => {}
            other => report.disagree(
                &String::from_utf8_lossy(&bytes),
                format!("UTF-8 {utf8}, aurore {:?}", other.map(|_| "stored").map_err(|r| r.label())),
            ),
        }
    }
    assert!(mangled > PER_CLASS / 2, "only {mangled} invalid UTF-8 inputs");
    report.finish(inputs.len() + mangled);
}

// ---------------------------------------------------------------------------------------------
// Objects

/// A JSON value built as a tree, and what it holds by construction: a key repeated in one
/// object (compared decoded, as jsonb compares them), and its nesting depth.
struct Built {
    json: String,
    duplicate: bool,
    depth: usize,
}

/// Keys from a small set, so that repeats come often; `a` also written `\u0061`.
fn object_value(rng: &mut fastrand::Rng, depth: usize, max_depth: usize) -> Built {
    let leaf = || Built { json: String::new(), duplicate: false, depth: 0 };
    if depth >= max_depth || rng.u8(..3) == 0 {
        let mut b = leaf();
        b.json = ["1", "\"v\"", "null", "[]", "{}", "-0.5e3", "true"][rng.usize(..7)].to_string();
        b.depth = usize::from(b.json.starts_with(['[', '{']));
        return b;
    }
    let object = rng.bool();
    let n = rng.usize(0..5);
    let mut out = Built { json: String::from(if object { "{" } else { "[" }), duplicate: false, depth: 0 };
    let mut seen: Vec<&str> = Vec::new();
    for i in 0..n {
        if i > 0 {
            out.json.push(',');
        }
        if object {
            let (written, decoded) = [("a", "a"), ("\\u0061", "a"), ("b", "b"), ("c d", "c d"), ("e", "e")][rng.usize(..5)];
            out.duplicate |= seen.contains(&decoded);
            seen.push(decoded);
            out.json.push_str(&format!("\"{written}\":"));
        }
        let child = object_value(rng, depth + 1, max_depth);
        out.duplicate |= child.duplicate;
        out.depth = out.depth.max(child.depth);
        out.json.push_str(&child.json);
    }
    out.json.push(if object { '}' } else { ']' });
    out.depth += 1;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_agree_with_postgresql() {
    let db = client().await;
    let mut rng = fastrand::Rng::with_seed(seed());
    let built: Vec<Built> = (0..PER_CLASS)
        .map(|_| {
            let mut b = object_value(&mut rng, 0, 6);
            // Nesting at aurore's limit (128) and just past it, around a value.
            if rng.u8(..20) == 0 {
                let extra = event::MAX_DEPTH - b.depth + rng.usize(0..=1);
                b.json = format!("{}{}{}", "[".repeat(extra), b.json, "]".repeat(extra));
                b.depth += extra;
            }
            b
        })
        .collect();
    let inputs: Vec<String> = built.iter().map(|b| b.json.clone()).collect();
    let pg = postgres(&db, "jsonb", &inputs).await;
    let mut report = Report::new("objects");
    for (b, pg) in built.iter().zip(pg) {
        assert!(pg.is_some(), "PostgreSQL refuses a generated value: {:.200}", b.json);
        for json in [
            format!(r#"{{"service":"s","event_type":"t","payload":{}}}"#, b.json),
            format!(r#"{{"service":"s","event_type":"t","x":{}}}"#, b.json),
        ] {
            match aurore(json.as_bytes()) {
                Ok(_) if !b.duplicate && b.depth <= event::MAX_DEPTH => {}
                Err(Reject::TooDeep) if b.depth > event::MAX_DEPTH => report.stricter += 1,
                Err(Reject::DuplicateKey) if b.duplicate => {}
                other => report.disagree(
                    &b.json,
                    format!(
                        "aurore: {:?}; built with a duplicate: {}, depth {}",
                        other.map(|_| "stored").map_err(|r| r.label()),
                        b.duplicate,
                        b.depth
                    ),
                ),
            }
        }
    }
    report.finish(inputs.len());
}
