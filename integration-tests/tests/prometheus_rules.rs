//! prometheus/: both scrape configs and the rules pass promtool, every alert has a unit test,
//! and the compose and local configs scrape the same jobs every 15 s.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("running promtool: {e} (scripts/stack up installs Debian's prometheus, which has it)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The values of `key: value` lines (list items included), in order.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim_start().trim_start_matches("- ").strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().trim_matches('"'))
        .collect()
}

#[test]
fn scrape_configs_are_valid() {
    for config in ["prometheus.yml", "prometheus-local.yml"] {
        let out = promtool(&["check", "config", config]);
        assert!(out.contains("2 rule files found"), "{config} loads the recording and alert rules:\n{out}");
    }
}

#[test]
fn compose_and_local_configs_scrape_the_same_jobs_every_15s() {
    let compose = read("prometheus/prometheus.yml");
    let local = read("prometheus/prometheus-local.yml");
    let jobs = values(&compose, "job_name");
    assert_eq!(jobs, ["aurore", "postgres_exporter", "kafka_exporter", "prometheus"]);
    assert_eq!(values(&local, "job_name"), jobs);
    for text in [&compose, &local] {
        assert_eq!(values(text, "scrape_interval"), ["15s"]);
        assert_eq!(values(text, "metrics_path"), ["/metrics/prometheus"], "aurore serves /metrics/prometheus");
    }
}

#[test]
fn rules_are_valid() {
    let out = promtool(&["check", "rules", "rules/recording.yml", "rules/alerts.yml"]);
    assert!(
        out.contains("SUCCESS: 9 rules found\n\nChecking rules/alerts.yml\n  SUCCESS: 11 rules found"),
        "nine recording rules, eleven alerts:\n{out}"
    );
}

#[test]
fn every_alert_has_a_unit_test_and_the_tests_pass() {
    let alerts = read("prometheus/rules/alerts.yml");
    let tests = read("prometheus/tests/alerts_test.yml");
    let names = values(&alerts, "alert");
    assert_eq!(names.len(), 11, "{names:?}");
    let tested = values(&tests, "alertname");
    for name in &names {
        assert!(tested.contains(name), "{name} has no test in prometheus/tests/alerts_test.yml");
    }
    let out = promtool(&["test", "rules", "tests/alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}
