use super::*;

fn columns(table: &str) -> Vec<(String, String, bool, bool)> {
    COLUMNS_BEFORE_V8
        .iter()
        .find(|(t, _)| *t == table)
        .unwrap()
        .1
        .iter()
        .map(|(n, t, nn)| (n.to_string(), t.to_string(), *nn, false))
        .collect()
}

#[test]
fn v1_to_v7_columns_match() {
    for table in ["events", "dead_letters"] {
        assert_eq!(column_mismatch(table, &columns(table)), None);
        // NOT NULL where V8 does not need it is fine.
        let mut c = columns(table);
        c.iter_mut().for_each(|c| c.2 = true);
        assert_eq!(column_mismatch(table, &c), None);
    }
}

#[test]
fn every_kind_of_mismatch_is_named() {
    let mut c = columns("events");
    c.push(("reason".into(), "text".into(), true, false)); // dead_letters' column, not events'
    c.retain(|c| c.0 != "extra");
    c.iter_mut().find(|c| c.0 == "payload").unwrap().1 = "json".into();
    c.iter_mut().find(|c| c.0 == "service").unwrap().2 = false;
    c.iter_mut().find(|c| c.0 == "topic").unwrap().3 = true;
    let said = column_mismatch("events", &c).unwrap();
    for part in [
        "column reason is not aurore's",
        "column extra is missing",
        "column payload is json, not jsonb",
        "column service is not NOT NULL",
        "column topic has a collation of its own",
    ] {
        assert!(said.contains(part), "{said}");
    }
    assert!(said.starts_with("events: "), "{said}");
}
