//! grafana/: the dashboards are well formed, and every query in them (and every recording rule)
//! returns data from the local stack's Prometheus while aurore runs under load.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use integration_tests::{Aurore, Env, event, prometheus_query, wait_until};
use serde_json::Value;

const DASHBOARDS: [&str; 3] = ["aurore-overview", "aurore-postgresql", "aurore-kafka"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dashboard(name: &str) -> Value {
    let path = repo().join(format!("grafana/dashboards/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Panels, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every `uid` of a provisioned datasource.
fn provisioned_uids() -> HashSet<String> {
    let text = std::fs::read_to_string(repo().join("grafana/provisioning/datasources/prometheus.yml")).unwrap();
    text.lines().filter_map(|l| l.trim().strip_prefix("uid:")).map(|u| u.trim().trim_matches('"').to_owned()).collect()
}

#[test]
fn dashboards_are_what_the_generator_writes() {
    let out = tempdir();
    let status = Command::new("python3")
        .arg(repo().join("grafana/generate.py"))
        .args(["--out", out.to_str().unwrap()])
        .status()
        .expect("python3");
    assert!(status.success());
    for name in DASHBOARDS {
        let generated = std::fs::read_to_string(out.join(format!("{name}.json"))).unwrap();
        let committed = std::fs::read_to_string(repo().join(format!("grafana/dashboards/{name}.json"))).unwrap();
        assert!(
            generated == committed,
            "grafana/dashboards/{name}.json differs from grafana/generate.py's output: run python3 grafana/generate.py"
        );
    }
}

#[test]
fn panel_ids_are_unique_and_datasources_are_provisioned() {
    let uids = provisioned_uids();
    assert!(uids.contains("prometheus"), "{uids:?}");
    for name in DASHBOARDS {
        let d = dashboard(name);
        let mut ids = HashSet::new();
        for p in panels(&d) {
            let id = p["id"].as_i64().unwrap_or_else(|| panic!("{name}: panel without id: {}", p["title"]));
            assert!(ids.insert(id), "{name}: panel id {id} is used twice");
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap();
            assert!(p["description"].as_str().is_some_and(|s| s.len() > 20), "{name}/{title}: no description");
            let defaults = &p["fieldConfig"]["defaults"];
            assert!(defaults["unit"].as_str().is_some_and(|u| !u.is_empty()), "{name}/{title}: no unit");
            assert!(defaults["thresholds"]["steps"].as_array().is_some_and(|s| !s.is_empty()), "{name}/{title}: no thresholds");
            let mut sources = vec![&p["datasource"]];
            sources.extend(p["targets"].as_array().unwrap().iter().map(|t| &t["datasource"]));
            for ds in sources {
                let uid = ds["uid"].as_str().unwrap_or_else(|| panic!("{name}/{title}: datasource without uid"));
                assert!(uids.contains(uid), "{name}/{title}: datasource uid {uid:?} is not provisioned");
            }
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            let uid = v["datasource"]["uid"].as_str().unwrap();
            assert!(uids.contains(uid), "{name}: variable {} uses unprovisioned datasource {uid:?}", v["name"]);
        }
    }
}

/// Grafana's variables and macros, replaced as the dashboards' defaults would ("All").
fn substitute(expr: &str, variables: &[(String, String)]) -> String {
    let mut e = expr.replace("$__rate_interval", "1m").replace("$__range", "5m").replace("$__interval", "15s");
    for (name, value) in variables {
        e = e.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    e
}

/// (where, PromQL) for every panel query, every variable query and every recording rule.
fn all_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        let vars: Vec<(String, String)> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_owned(), v["allValue"].as_str().unwrap_or(".*").to_owned()))
            .collect();
        for v in d["templating"]["list"].as_array().unwrap() {
            // label_values(metric, label): the label's values exist when this returns series.
            let q = v["query"]["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{name}: variable query {q}"));
            let (metric, label) = inner.rsplit_once(',').unwrap();
            out.push((format!("{name} variable {}", v["name"]), format!("count by ({}) ({})", label.trim(), metric.trim())));
        }
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap();
                out.push((
                    format!("{name} / {} / {}", p["title"].as_str().unwrap(), t["refId"].as_str().unwrap()),
                    substitute(expr, &vars),
                ));
            }
        }
    }
    let rules = std::fs::read_to_string(repo().join("prometheus/rules/recording.yml")).unwrap();
    let mut record = None;
    for line in rules.lines().map(str::trim) {
        if let Some(r) = line.strip_prefix("- record:") {
            record = Some(r.trim().to_owned());
        } else if let (Some(expr), Some(r)) = (line.strip_prefix("expr:"), record.take()) {
            out.push((format!("recording rule {r}"), expr.trim().to_owned()));
            // The recorded series itself, as the dashboards read it.
            out.push((format!("recorded series {r}"), r));
        }
    }
    out
}

#[test]
fn every_query_substitutes_every_variable() {
    for (place, q) in all_queries() {
        assert!(!q.contains('$'), "{place}: unsubstituted variable in {q}");
    }
}

/// The local stack's Prometheus scrapes aurore at 127.0.0.1:3000 (prometheus/prometheus-local.yml).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_recording_rule_returns_data_under_load() {
    let queries = all_queries();
    assert!(queries.len() > 60, "{} queries", queries.len());
    let env = Env::new("dashboards", 3, &[]).await;
    assert!(std::net::TcpListener::bind("127.0.0.1:3000").is_ok(), "port 3000 is taken: stop what runs there (scripts/run?)");
    let aurore = Aurore::spawn_with(&env, &[], 3000, &env.database_url);
    // ~400 events/s for up to 5 minutes, stopped when every query has answered; one in 500 is
    // not JSON (the dead-letter panels).
    let stream = (0..120_000u64)
        .map(|i| {
            let value = if i % 500 == 499 { b"not json".to_vec() } else { event(&format!("svc{}", i % 4), "order.created", i) };
            ((i % 3) as i32, value)
        })
        .collect();
    let load = env.produce_stream(&env.producer(&[]), stream, 200, Duration::from_millis(500));
    env.wait_persisted(1_000, Duration::from_secs(60)).await;
    // Rates need two scrapes of aurore (every 15 s) inside their window; recording rules another
    // evaluation. Poll until every query returns a series, listing those still empty.
    let mut empty: Vec<(String, String)> = queries.clone();
    let mut reported = usize::MAX;
    let waited = tokio::time::Instant::now();
    wait_until("every dashboard query and recording rule to return at least one series", Duration::from_secs(180), || {
        let pending = std::mem::take(&mut empty);
        let still: Vec<_> =
            tokio::task::block_in_place(|| pending.into_iter().filter(|(_, q)| prometheus_query(q).is_empty()).collect());
        let done = still.is_empty();
        if !done && still.len() != reported {
            reported = still.len();
            eprintln!(
                "{} of {} queries still empty after {:?}, e.g. {:?}",
                still.len(),
                queries.len(),
                waited.elapsed(),
                &still[..still.len().min(3)]
            );
        }
        empty = still;
        async move { done.then_some(()) }
    })
    .await;
    eprintln!("all {} queries returned data after {:?}", queries.len(), waited.elapsed());
    load.abort();
    drop(aurore);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aurore-dashboards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
