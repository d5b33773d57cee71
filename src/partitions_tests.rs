use super::*;

const H: i64 = 3600 * SECOND;
const DAY: i64 = 24 * H;
/// 2026-12-02T05:25:13.5Z
const NOW: i64 = 1_796_189_113_500_000;

fn part(name: &str, start: Option<i64>, end: Option<i64>) -> Partition {
    Partition { name: name.into(), range: Range { start, end }, bytes: 0 }
}

fn daily(retention: Option<i64>) -> Settings {
    Settings { interval: DAY, retention }
}

/// Applies a plan's creations, as a pass would.
fn with_created(mut attached: Vec<Partition>, plan: &Plan) -> Vec<Partition> {
    for &(s, e) in &plan.create {
        attached.push(part(&partition_name("events", s), Some(s), Some(e)));
    }
    attached
}

#[test]
fn an_empty_table_gets_the_current_and_the_next_interval() {
    let day = NOW.div_euclid(DAY) * DAY;
    let plan = plan(&[], NOW, daily(None));
    assert_eq!(plan.create, vec![(day, day + DAY), (day + DAY, day + 2 * DAY)]);
    assert!(plan.drop.is_empty());
    let attached = with_created(Vec::new(), &plan);
    assert_eq!(ahead(&attached, NOW), day + 2 * DAY - NOW);
    assert!(ahead(&attached, NOW) > DAY, "the next partition exists a whole interval ahead");
}

#[test]
fn a_pass_after_a_pass_changes_nothing_until_the_next_interval_comes_near() {
    let first = with_created(Vec::new(), &plan(&[], NOW, daily(None)));
    assert_eq!(plan(&first, NOW, daily(None)), Plan::default());
    assert_eq!(plan(&first, NOW + 10 * H, daily(None)), Plan::default());
    let next_day = NOW.div_euclid(DAY) * DAY + DAY;
    let later = plan(&first, next_day, daily(None));
    assert_eq!(later.create, vec![(next_day + DAY, next_day + 2 * DAY)]);
}

#[test]
fn the_table_attached_by_the_migration_is_respected_and_the_rest_of_its_interval_filled() {
    // V8 attached the old table as [MINVALUE, migration time + 1 µs).
    let migrated = NOW + 1;
    let legacy = part("events_before_partitioning", None, Some(migrated));
    let day = NOW.div_euclid(DAY) * DAY;
    let p = plan(std::slice::from_ref(&legacy), NOW, daily(None));
    assert_eq!(p.create, vec![(migrated, day + DAY), (day + DAY, day + 2 * DAY)]);
    assert_eq!(partition_name("events", migrated), "events_p20261202t052513_500001");
    assert_eq!(oldest(std::slice::from_ref(&legacy)), Some(migrated), "MINVALUE counts from its end");
    // Retention drops it whole once its end is old enough, never before.
    assert_eq!(plan(std::slice::from_ref(&legacy), migrated + 2 * DAY, daily(Some(2 * DAY))).drop, vec![legacy.name.clone()]);
    assert!(plan(&[legacy], migrated + 2 * DAY - 1, daily(Some(2 * DAY))).drop.is_empty());
}

#[test]
fn retention_drops_partitions_that_ended_long_enough_ago_and_never_the_current_one() {
    let day = NOW.div_euclid(DAY) * DAY;
    let attached: Vec<Partition> = (-10..=1)
        .map(|k| part(&partition_name("events", day + k * DAY), Some(day + k * DAY), Some(day + (k + 1) * DAY)))
        .collect();
    let p = plan(&attached, NOW, daily(Some(7 * DAY)));
    // Ended at or before NOW - 7 days: those that end by day - 7 days + (NOW - day).
    let expected: Vec<String> =
        attached.iter().filter(|x| x.range.end.unwrap() <= NOW - 7 * DAY).map(|x| x.name.clone()).collect();
    assert_eq!(p.drop, expected);
    assert_eq!(p.drop.len(), 3, "days -10..-8 end by NOW - 7 days; day -7 ends a day later");
    // A retention shorter than the interval still keeps the partition holding now.
    let p = plan(&attached, NOW, daily(Some(SECOND)));
    assert!(!p.drop.iter().any(|n| *n == partition_name("events", day)));
    assert!(p.drop.contains(&partition_name("events", day - DAY)));
}

#[test]
fn partitions_of_another_length_are_kept_and_only_gaps_created() {
    // Hourly partitions from an earlier --partition-interval, through 06:00; now daily.
    let day = NOW.div_euclid(DAY) * DAY;
    let hourly: Vec<Partition> = (0..6).map(|k| part(&format!("h{k}"), Some(day + k * H), Some(day + (k + 1) * H))).collect();
    let p = plan(&hourly, NOW, daily(None));
    assert_eq!(p.create, vec![(day + 6 * H, day + DAY), (day + DAY, day + 2 * DAY)]);
    // A hole in the middle is filled exactly.
    let holed: Vec<Partition> = hourly.iter().filter(|x| x.name != "h5").cloned().collect();
    assert_eq!(plan(&holed, NOW, daily(None)).create[0], (day + 5 * H, day + DAY));
}

#[test]
fn no_partition_is_made_wholly_in_the_past() {
    // Weekly cells start on Thursdays (the epoch's weekday); V8 made one partition from today,
    // 00:00 UTC, through tomorrow: the part of this week's cell before it is past.
    let week = 7 * DAY;
    let day = NOW.div_euclid(DAY) * DAY;
    let v8 = part("events_p_v8", Some(day), Some(day + 2 * DAY));
    let p = plan(std::slice::from_ref(&v8), NOW, Settings { interval: week, retention: Some(H) });
    let cell = NOW.div_euclid(week) * week;
    assert!(cell < day, "the cell starts before V8's partition");
    assert_eq!(cell + week, day + DAY, "this week's cell ends inside V8's partition");
    assert_eq!(p.create, vec![(day + 2 * DAY, cell + 2 * week)], "only the rest of next week's cell");
    assert!(p.drop.is_empty());
}

#[test]
fn unbounded_partitions_cover_everything() {
    let all = [part("all", None, None)];
    assert_eq!(plan(&all, NOW, daily(Some(DAY))), Plan::default());
    assert_eq!(ahead(&all, NOW), i64::MAX);
}

#[test]
fn ahead_is_zero_when_no_partition_holds_now_and_stops_at_a_gap() {
    assert_eq!(ahead(&[], NOW), 0);
    let a = [part("a", Some(NOW - H), Some(NOW + H)), part("c", Some(NOW + 2 * H), Some(NOW + 3 * H))];
    assert_eq!(ahead(&a, NOW), H);
}

/// Generated: any set of non-overlapping partitions, any now, any interval; after applying the
/// plan, nothing overlaps, now through now + interval is covered, and nothing covering now or
/// later is dropped.
#[test]
fn generated_plans_cover_ahead_without_overlap() {
    let mut rng = fastrand::Rng::with_seed(20);
    for _ in 0..20_000 {
        let interval = [SECOND, 7 * SECOND, 60 * SECOND, H, DAY][rng.usize(..5)];
        let now = NOW + rng.i64(-3 * DAY..3 * DAY);
        let mut attached = Vec::new();
        let mut t = now - rng.i64(0..5 * interval.max(H));
        for k in 0..rng.usize(0..6) {
            let start = t + rng.i64(0..2) * rng.i64(0..interval);
            let end = start + rng.i64(1..3 * interval);
            let lower = if k == 0 && rng.bool() { None } else { Some(start) };
            attached.push(part(&format!("p{k}"), lower, Some(end)));
            t = end;
        }
        let retention = rng.bool().then(|| rng.i64(1..4 * interval));
        let p = plan(&attached, now, Settings { interval, retention });
        let after = with_created(attached.clone(), &p);
        let mut ranges: Vec<(i64, i64)> =
            after.iter().map(|x| (x.range.start.unwrap_or(i64::MIN), x.range.end.unwrap())).collect();
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap {w:?} (plan {p:?}, attached {attached:?})");
        }
        assert!(ahead(&after, now) >= interval, "not a whole interval ahead: {p:?} {attached:?} now {now}");
        for (s, e) in &p.create {
            assert!(s < e && *e > now, "{s}..{e} takes no row from now on (now {now})");
            assert!(partition_name("events", *s).len() <= 63, "PostgreSQL's identifier limit");
        }
        for name in &p.drop {
            let x = attached.iter().find(|x| &x.name == name).unwrap();
            assert!(x.range.end.unwrap() <= now - retention.unwrap() && !x.range.contains(now));
        }
    }
}

#[test]
fn names_and_literals_are_utc() {
    let day = NOW.div_euclid(DAY) * DAY;
    assert_eq!(partition_name("dead_letters", day), "dead_letters_p20261202t000000");
    assert_eq!(literal(day + 5 * H), "'2026-12-02 05:00:00.000000+00'");
    assert_eq!(literal(-1), "'1969-12-31 23:59:59.999999+00'");
}

#[test]
fn a_pass_runs_every_quarter_interval_and_at_least_every_minute() {
    assert_eq!(Settings { interval: DAY, retention: None }.period(), Duration::from_secs(60));
    assert_eq!(Settings { interval: SECOND, retention: None }.period(), Duration::from_millis(250));
}

/// Each failure an operator can mend is told by its SQLSTATE (a failed pass's `hint`).
#[test]
fn hints_by_sqlstate() {
    use tokio_postgres::error::SqlState;
    let cases = [
        (SqlState::INSUFFICIENT_PRIVILEGE, "run `aurore migrate` as the owner"),
        (SqlState::DUPLICATE_TABLE, "rename or drop it"),
        (SqlState::LOCK_NOT_AVAILABLE, "a long transaction holds the table"),
        (SqlState::WRONG_OBJECT_TYPE, "not migrated to V8"),
    ];
    for (code, said) in cases {
        assert!(hint_for(Some(&code)).contains(said), "{code:?}: {}", hint_for(Some(&code)));
    }
    assert_eq!(hint_for(Some(&SqlState::DISK_FULL)), "see the error");
    assert_eq!(hint_for(None), "see the error");
}
