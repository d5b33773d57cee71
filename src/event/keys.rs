//! Duplicate keys below the top level. jsonb keeps the last of a duplicated key, so an object
//! stored with one would silently differ from what was sent: aurore dead-letters it as
//! `duplicate_key`, naming the JSON path of the second occurrence (`$.payload.a[2].b`). Keys
//! compare as decoded strings (`"a"` and `"\u0061"` are the same key, as for jsonb).
//!
//! Runs on the general decoder's payload and unknown fields, after
//! [`json_storable`](super::storable::json_storable) has bounded their depth; the fast path leaves any object whose keys it
//! cannot compare cheaply to the general decoder.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

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
    let mut path = Vec::new();
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

/// True if a container in `json` repeats a key, `path` then leading to the repeat. Values are
/// taken raw (`RawValue`: numbers are scanned, never converted, so no size refuses them) and
/// containers walked in turn.
fn walk<'a>(json: &'a str, path: &mut Vec<Step<'a>>) -> bool {
    let Ok(children) = serde_json::Deserializer::from_str(json).deserialize_any(Children) else { return false };
    match children {
        Node::Object(fields) => {
            for (i, (key, _)) in fields.iter().enumerate() {
                if fields[..i].iter().any(|(k, _)| k == key) {
                    path.push(Step::Key(key.clone()));
                    return true;
                }
            }
            for (key, value) in fields {
                path.push(Step::Key(key));
                if container(value) && walk(value, path) {
                    return true;
                }
                path.pop();
            }
        }
        Node::Array(items) => {
            for (i, value) in items.into_iter().enumerate() {
                path.push(Step::Index(i));
                if container(value) && walk(value, path) {
                    return true;
                }
                path.pop();
            }
        }
        Node::Scalar => {}
    }
    false
}

fn container(raw: &str) -> bool {
    matches!(raw.as_bytes().first(), Some(b'{' | b'['))
}

enum Node<'a> {
    Object(Vec<(Cow<'a, str>, &'a str)>),
    Array(Vec<&'a str>),
    Scalar,
}

/// One container's children, raw.
struct Children;

impl<'de> Visitor<'de> for Children {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            fields.push((key.0, map.next_value::<&'de RawValue>()?.get()));
        }
        Ok(Node::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<&'de RawValue>()? {
            items.push(v.get());
        }
        Ok(Node::Array(items))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node<'de>, E> {
        Ok(Node::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node<'de>, E> {
        Ok(Node::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node<'de>, E> {
        Ok(Node::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node<'de>, E> {
        Ok(Node::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node<'de>, E> {
        Ok(Node::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Scalar)
    }
}

/// A key, borrowed when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
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
    }
}
