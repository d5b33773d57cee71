//! docker-compose.yml and the Dockerfile: the file validates (Debian's docker-compose 1.29
//! needs no engine for that), every service has a healthcheck, and every dependency waits on
//! a condition. `scripts/compose-smoke` runs the file for real.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `docker-compose config`: the file validated and normalised (one layout, whatever the input's).
fn normalised_config() -> String {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("running docker-compose: {e} (scripts/stack up installs Debian's docker-compose)"));
    assert!(out.status.success(), "docker-compose.yml does not validate:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Each service's lines of a compose file indented by two spaces a level (comments dropped).
fn services(config: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_services = false;
    let mut current = None;
    for line in config.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()) {
        if !line.starts_with(' ') {
            in_services = line == "services:";
            current = None;
        } else if in_services && line.starts_with("  ") && !line.starts_with("   ") {
            current = Some(line.trim().trim_end_matches(':').to_owned());
        } else if let Some(name) = &current {
            out.entry(name.clone()).or_default().push(line.to_owned());
        }
    }
    out
}

#[test]
fn the_compose_file_validates() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(repo())
        .output()
        .expect("docker-compose");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_service_has_a_healthcheck_and_every_dependency_a_condition() {
    let normalised = services(&normalised_config());
    // Conditions as written (normalising adds service_started to a bare dependency).
    let written = services(&std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap());
    let names: Vec<&str> = normalised.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["aurore", "grafana", "kafka", "kafka_exporter", "postgres", "postgres_exporter", "producer", "prometheus", "topic-init"]
    );
    for (name, lines) in &normalised {
        assert!(lines.iter().any(|l| l == "    healthcheck:"), "{name} has no healthcheck");
    }
    assert_eq!(written.keys().collect::<Vec<_>>(), normalised.keys().collect::<Vec<_>>());
    for (name, lines) in &written {
        let mut in_depends = false;
        let mut deps = 0;
        let mut conditions = 0;
        for l in lines {
            if l.starts_with("    ") && !l.starts_with("     ") {
                in_depends = l == "    depends_on:";
            } else if in_depends && l.starts_with("      ") && !l.starts_with("       ") {
                deps += 1;
            } else if in_depends
                && ["condition: service_healthy", "condition: service_completed_successfully"].contains(&l.trim())
            {
                conditions += 1;
            }
        }
        assert_eq!(
            deps, conditions,
            "{name}: every depends_on entry waits for service_healthy or service_completed_successfully"
        );
    }
    let has = |service: &str, text: &str| normalised[service].iter().any(|l| l.contains(text));
    assert!(has("aurore", "condition: service_completed_successfully"), "aurore waits for topic-init to succeed");
    assert!(has("aurore", "/health/ready"), "aurore's healthcheck is /health/ready");
    assert!(has("grafana", "published: 3001"), "Grafana on host port 3001");
    assert!(
        has("producer", "- producer") && has("producer", "produce"),
        "the producer runs `aurore produce` under the producer profile"
    );
    assert!(has("postgres", "shared_preload_libraries=pg_stat_statements"), "pg_stat_statements preloaded");
    assert!(has("kafka", "image: apache/kafka:"), "the official Kafka image");
    assert!(has("topic-init", "topics.conf"), "topics from kafka/topics.conf");
}

#[test]
fn the_image_is_multi_stage_runs_as_non_root_and_checks_readiness() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage: {froms:?}");
    let runtime = &dockerfile[dockerfile.rfind("\nFROM ").unwrap()..];
    let user = runtime.lines().filter_map(|l| l.strip_prefix("USER ")).next_back().expect("the runtime stage sets USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert!(runtime.contains("HEALTHCHECK") && runtime.contains("/health/ready"));
}

/// `scripts/compose-smoke` runs the image compose users build: its override (scripts/compose-local.yml)
/// swaps only pulled images for local stand-ins, and `scripts/images --compose` builds aurore:latest from
/// the root Dockerfile with stand-ins of exactly the two images that Dockerfile starts from.
#[test]
fn the_smoke_run_uses_the_image_built_from_the_root_dockerfile() {
    let written = services(&std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap());
    for name in ["aurore", "producer"] {
        let has = |text: &str| written[name].iter().any(|l| l.trim() == text);
        assert!(has("build: .") && has("image: aurore:latest"), "{name} is aurore:latest, built from the root Dockerfile");
    }
    let local = services(&std::fs::read_to_string(repo().join("scripts/compose-local.yml")).unwrap());
    for (name, lines) in &local {
        assert!(written.contains_key(name), "compose-local.yml names {name}, which docker-compose.yml has not");
        assert!(!written[name].iter().any(|l| l.trim().starts_with("build:")), "compose-local.yml replaces {name}'s built image");
        assert!(lines.iter().all(|l| l.trim().starts_with("image: aurore-local/")), "{name}: only the image is swapped");
    }
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms,
        ["FROM rust:${RUST_VERSION}-bookworm AS build", "FROM debian:bookworm-slim"],
        "scripts/images builds stand-ins of these two (scripts/images.d/rust, debian-slim): change them together"
    );
}
