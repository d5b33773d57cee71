use super::*;

#[test]
fn all_holds_every_reason_once_in_order() {
    // Reject is fieldless, so `r as usize` is its place in the list.
    for (i, r) in Reject::ALL.into_iter().enumerate() {
        assert_eq!(r as usize, i, "{r:?}");
    }
    assert_eq!(Reject::ALL.len(), Reject::PostgresRejected as usize + 1);
}

#[test]
fn labels_are_unique_snake_case_names_of_their_reasons() {
    let mut labels: Vec<_> = Reject::ALL.iter().map(|r| r.label()).collect();
    for (r, label) in Reject::ALL.iter().zip(&labels) {
        let snake: String = format!("{r:?}")
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i > 0 && c.is_ascii_uppercase()).then_some('_').into_iter().chain([c.to_ascii_lowercase()]))
            .collect();
        assert_eq!(*label, snake, "{r:?}");
        assert!(!label.starts_with('_') && !label.ends_with('_') && !label.contains("__"), "{label}");
        assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{label}");
    }
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), Reject::ALL.len());
}

#[test]
fn the_labels_dashboards_and_alerts_use_are_all_there() {
    let labels: Vec<_> = Reject::ALL.iter().map(|r| r.label()).collect();
    for known in [
        "tombstone",
        "empty",
        "oversized",
        "not_utf8",
        "byte_order_mark",
        "invalid_json",
        "not_object",
        "missing_field",
        "empty_field",
        "field_too_long",
        "wrong_type",
        "duplicate_key",
        "invalid_id",
        "invalid_timestamp",
        "timestamp_out_of_range",
        "nul_character",
        "lone_surrogate",
        "number_out_of_range",
        "too_deep",
        "postgres_rejected",
    ] {
        assert!(labels.contains(&known), "label {known:?} is gone: Prometheus series, dashboards and alerts name it");
    }
}
