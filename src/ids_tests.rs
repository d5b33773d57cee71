use super::*;

fn reference(keys: &[(&str, i32, i64)]) -> Vec<Uuid> {
    keys.iter().map(|&(t, p, o)| event::derived_id(t, p, o)).collect()
}

fn derived(keys: &[(&str, i32, i64)]) -> Vec<Uuid> {
    let mut out = vec![Uuid::nil(); keys.len()];
    derive_ids(keys.iter().copied(), &mut out);
    out
}

#[test]
fn the_same_ids_as_one_at_a_time() {
    // Topic lengths on both sides of the one-block limit, in bursts of every size up to
    // three full sets of lanes, so lanes are partly filled and long names fall back.
    let topics: Vec<String> = (1..=40).map(|n| "t".repeat(n)).collect();
    let partitions = [0, 1, 7, 99, 4_095, i32::MAX];
    let offsets = [0, 1, 9, 10, 123_456_789, 1 << 40, i64::MAX];
    let mut keys = Vec::new();
    for (i, topic) in topics.iter().enumerate() {
        for (j, &partition) in partitions.iter().enumerate() {
            keys.push((topic.as_str(), partition, offsets[(i + j) % offsets.len()]));
        }
    }
    for burst in 0..=3 * LANES {
        for chunk in keys.chunks(burst.max(1)).take(40) {
            let chunk = &chunk[..chunk.len().min(burst)];
            assert_eq!(derived(chunk), reference(chunk), "burst of {burst}: {chunk:?}");
        }
    }
}

#[test]
fn a_known_id() {
    // Python's uuid.uuid5(namespace, "events/3/42"): fixes the derivation itself, not only the
    // agreement of the two implementations.
    let id = Uuid::parse_str("da0d428e-c735-5ad0-a283-bd4aad3f9a98").unwrap();
    assert_eq!(event::derived_id("events", 3, 42), id);
    assert_eq!(derived(&[("events", 3, 42)]), vec![id]);
}

#[test]
fn a_burst_of_one_partition() {
    let keys: Vec<(&str, i32, i64)> = (1_000_000..1_000_256).map(|o| ("events", 2, o)).collect();
    let ids = derived(&keys);
    assert_eq!(ids, reference(&keys));
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 256);
}

#[test]
fn one_block_takes_names_up_to_55_bytes_with_the_namespace() {
    // 16 + "t…t/1/2" (topic + 4) = 55: the longest that fits.
    assert!(one_block(&"t".repeat(35), 1, 2).is_some());
    assert!(one_block(&"t".repeat(36), 1, 2).is_none());
}
