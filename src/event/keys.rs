//! Duplicate keys below the top level. jsonb keeps the last of a duplicated key, so an object
//! stored with one would silently differ from what was sent: aurore dead-letters it as
//! `duplicate_key`, naming the JSON path of the second occurrence (`$.payload.a[2].b`). Keys
//! compare as decoded strings (`"a"` and `"\u0061"` are the same key, as for jsonb).
//!
//! Runs on the general decoder's payload and unknown fields, after
//! [`json_storable`](super::storable::json_storable) has bounded their depth; the fast path leaves any object whose keys it
//! cannot compare cheaply to the general decoder.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;

use super::{Invalid, Reject};

/// One step of a JSON path.
enum Step<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

/// `Ok` if no object in `json` (valid JSON) repeats a key; `field` names its top-level field.
pub(super) fn no_duplicate_keys(field: &str, json: &str) -> Result<(), Invalid> {
    // No object, no key to repeat: most values skip the walk.
    if !json.contains('{') {
        return Ok(());
    }
    let mut path = Vec::with_capacity(8);
    if !walk(json, &mut path) {
        return Ok(());
    }
    let mut at = format!("$.{}", display_key(field));
    for step in &path {
        let _ = match step {
            Step::Key(k) => write!(at, ".{}", display_key(k)),
            Step::Index(i) => write!(at, "[{i}]"),
        };
    }
    Err(Invalid::new(
        Reject::DuplicateKey,
        format!("duplicate key at {at:.200}: jsonb would keep only the last one, and the event would be stored altered"),
    ))
}

/// A key as a path step: bare when it is a plain name, else quoted as JSON.
fn display_key(k: &str) -> Cow<'_, str> {
    if !k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        Cow::Borrowed(k)
    } else {
        Cow::Owned(serde_json::to_string(k).unwrap_or_default())
    }
}

/// True if an object in `json` (valid JSON) repeats a key, `path` then leading to the repeat.
/// One pass over the bytes without recursion: the keys of the open objects on one stack,
/// compared decoded; an object with many keys also keeps them in a `HashSet` (std's randomly
/// keyed SipHash, so no crafted keys collide on purpose), and a message of 100,000 keys costs no
/// 10¹⁰ comparisons. Numbers are skipped, never converted.
fn walk<'a>(json: &'a str, path: &mut Vec<Step<'a>>) -> bool {
    /// An open array or object: where its keys start in `keys`, whether `path` has a step for
    /// it yet, and its keys as a set once it has more than [`LINEAR`].
    struct Open<'a> {
        object: bool,
        first_key: usize,
        stepped: bool,
        set: Option<HashSet<Cow<'a, str>>>,
    }
    const LINEAR: usize = 16;
    let b = json.as_bytes();
    let mut open: Vec<Open<'a>> = Vec::with_capacity(8);
    let mut keys: Vec<Cow<'a, str>> = Vec::with_capacity(16);
    let mut expect_key = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c @ (b'{' | b'[') => {
                let object = c == b'{';
                if !object {
                    path.push(Step::Index(0));
                }
                open.push(Open { object, first_key: keys.len(), stepped: !object, set: None });
                expect_key = object;
                i += 1;
            }
            b'}' | b']' => {
                expect_key = false; // `{}`
                if let Some(o) = open.pop() {
                    keys.truncate(o.first_key);
                    if o.stepped {
                        path.pop();
                    }
                }
                i += 1;
            }
            b',' => {
                match open.last() {
                    Some(o) if o.object => expect_key = true,
                    Some(_) => {
                        if let Some(Step::Index(n)) = path.last_mut() {
                            *n += 1;
                        }
                    }
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let end = string_end(b, i);
                if expect_key && let Some(o) = open.last_mut() {
                    expect_key = false;
                    let raw = &json[i + 1..end - 1];
                    let key = if raw.contains('\\') {
                        Cow::Owned(serde_json::from_str::<String>(&json[i..end]).unwrap_or_default())
                    } else {
                        Cow::Borrowed(raw)
                    };
                    let siblings = &keys[o.first_key..];
                    let repeated = match &mut o.set {
                        Some(set) => !set.insert(key.clone()),
                        None => siblings.contains(&key),
                    };
                    if o.set.is_none() && siblings.len() >= LINEAR {
                        o.set = Some(siblings.iter().chain([&key]).cloned().collect());
                    }
                    if o.stepped {
                        path.pop();
                    }
                    o.stepped = true;
                    path.push(Step::Key(key.clone()));
                    if repeated {
                        return true;
                    }
                    keys.push(key);
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    false
}

/// The index after the string that opens at `b[start]` (a `"`). Its first bytes one by one
/// (most strings here are keys, too short for `memchr`'s setup to pay), the rest by `memchr`.
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    let short = b.len().min(i + 24);
    while i < short {
        match b[i] {
            b'"' => return i + 1,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    while let Some(k) = b.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
        i += k;
        if b[i] == b'"' {
            return i + 1;
        }
        i += 2;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_at_any_depth_are_named_by_their_path() {
        let dup = |json: &str| no_duplicate_keys("payload", json).err().map(|e| (e.reason, e.detail));
        assert_eq!(dup(r#"{"a":1,"b":{"c":[1,{"d":2}]}}"#), None);
        let at =
            |json: &str| dup(json).map(|(_, d)| d.split(':').next().unwrap().trim_start_matches("duplicate key at ").to_string());
        assert_eq!(at(r#"{"a":1,"a":2}"#).as_deref(), Some("$.payload.a"));
        assert_eq!(at(r#"{"x":[0,{"k":1,"k":2}]}"#).as_deref(), Some("$.payload.x[1].k"));
        assert_eq!(
            at(r#"[{"a b":{"a":1,"a":2}}]"#).as_deref(),
            Some(r#"$.payload[0]."a b".a"#),
            "escaped and plain keys are one key"
        );
        assert_eq!(at(r#"{"n":1e999999,"m":[1e400],"m":0}"#).as_deref(), Some("$.payload.m"), "numbers are not converted");
        assert_eq!(dup(r#"{"a":{"b":1},"c":{"b":1}}"#), None, "the same key in two objects");
        assert_eq!(dup(r#""{"a":1,"a":2}""#), None, "inside a string");
        assert_eq!(dup(r#"[{},"a",{"a":{}},"a"]"#), None, "a string after an empty object is no key");
        assert_eq!(at(r#"[[],{"":[{}],"\"":1,"\u0022":2}]"#).as_deref(), Some(r#"$.payload[1]."\"""#));
        // Many keys: the set finds the repeat at either end.
        let many = |last: &str| format!(r#"{{{}"{last}":0}}"#, (0..1000).map(|i| format!(r#""k{i}":{i},"#)).collect::<String>());
        assert_eq!(dup(&many("k1000")), None);
        assert_eq!(at(&many("k0")).as_deref(), Some("$.payload.k0"));
        assert_eq!(at(&many("k999")).as_deref(), Some("$.payload.k999"));
    }
}
