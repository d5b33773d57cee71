use super::*;

fn m(version: i32, name: &str, checksum: u64) -> MigrationRecord {
    MigrationRecord { version, name: name.into(), checksum }
}

#[test]
fn every_migration_applied_is_ok() {
    let known = [m(1, "events", 11), m(2, "offsets", 22)];
    let state = MigrationState::of(&known, &known);
    assert_eq!(state.line(true, false), (true, "2 of 2 applied".into()));
}

#[test]
fn pending_migrations_are_fine_only_when_run_may_apply_them() {
    let known = [m(1, "events", 11), m(2, "offsets", 22), m(3, "dead", 33)];
    let state = MigrationState::of(&known, &known[..1]);
    assert_eq!(state.pending, ["V2__offsets", "V3__dead"]);
    let (ok, text) = state.line(false, true);
    assert!(ok, "{text}");
    assert_eq!(text, "1 of 3 applied; pending: V2__offsets, V3__dead (run applies them at start)");
    let (ok, text) = state.line(true, true);
    assert!(!ok && text.ends_with("--no-migrate is set: run `aurore migrate` first"), "{text}");
    let (ok, text) = state.line(false, false);
    assert!(!ok && text.contains("may not create tables"), "{text}");
    // An empty database: nothing applied, refinery's table absent.
    assert_eq!(MigrationState::of(&known, &[]).pending.len(), 3);
}

#[test]
fn a_changed_or_unknown_migration_fails_whatever_the_flags() {
    let known = [m(1, "events", 11), m(2, "offsets", 22)];
    let changed = MigrationState::of(&known, &[m(1, "events", 11), m(2, "offsets", 99)]);
    assert_eq!(changed.changed, ["V2__offsets"]);
    let (ok, text) = changed.line(false, true);
    assert!(!ok && text.contains("differ") && text.contains("V2__offsets"), "{text}");
    let newer = MigrationState::of(&known, &[m(1, "events", 11), m(2, "offsets", 22), m(3, "partitions", 33)]);
    assert_eq!(newer.unknown, ["V3__partitions"]);
    let (ok, text) = newer.line(false, true);
    assert!(!ok && text.contains("does not know (V3__partitions)"), "{text}");
}
