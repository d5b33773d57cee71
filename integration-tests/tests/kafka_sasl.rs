//! Kafka over TLS with SASL/SCRAM, against the local stack's second listener
//! (`scripts/stack`: `SASL_SSL` on 127.0.0.1:9094, a CA it made, the SCRAM user `aurore` created
//! with Kafka's own `ConfigCommand`). aurore is configured through `--kafka-config` only, consumes
//! a topic through that listener exactly once (SCRAM-SHA-256 and -512), and a wrong password stops
//! it with one line that says so.

use std::path::PathBuf;
use std::time::Duration;

use integration_tests::{Aurore, Env, events, free_port};

const SASL_BROKERS: &str = "127.0.0.1:9094";
const USER: &str = "aurore";
const PASSWORD: &str = "aurore-scram";

/// The CA of the stack's SASL_SSL listener.
fn ca() -> PathBuf {
    let state = std::env::var_os("AURORE_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack"));
    let ca = state.join("kafka/tls/ca.crt");
    assert!(
        ca.exists(),
        "{} does not exist: this test needs the local stack's SASL_SSL listener (scripts/stack up)",
        ca.display()
    );
    ca
}

fn sasl_args(mechanism: &str, password: &str, ca: &str) -> Vec<String> {
    [
        "security.protocol=SASL_SSL".to_string(),
        format!("sasl.mechanism={mechanism}"),
        format!("sasl.username={USER}"),
        format!("sasl.password={password}"),
        format!("ssl.ca.location={ca}"),
        // The listener's certificate names localhost and 127.0.0.1: verified, as by default.
        "ssl.endpoint.identification.algorithm=https".to_string(),
    ]
    .into_iter()
    .flat_map(|kv| ["--kafka-config".to_string(), kv])
    .chain(["--kafka-brokers".to_string(), SASL_BROKERS.to_string()])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_over_sasl_ssl_exactly_once_and_a_wrong_password_is_one_line() {
    let env = Env::new("kafka_sasl", 3, &[]).await;
    assert_eq!(env.stack.via, "the running stack", "the SASL_SSL listener is the local stack's (scripts/stack up)");
    let ca = ca();
    let ca = ca.to_str().unwrap();
    let producer = env.producer(&[]);
    env.produce(&producer, events(3_000, 3)).await;

    for (i, mechanism) in ["SCRAM-SHA-256", "SCRAM-SHA-512"].into_iter().enumerate() {
        let args = sasl_args(mechanism, PASSWORD, ca);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut aurore = Aurore::spawn_with(&env, &args, free_port(), &env.database_url);
        env.wait_persisted(3_000 * (i as i64 + 1), Duration::from_secs(120)).await;
        aurore.signal("TERM");
        assert_eq!(aurore.wait_exit(Duration::from_secs(60)).await, Some(0), "{}", aurore.log_text());
        env.assert_exactly_once().await;
        if i == 0 {
            // More for the second mechanism, so that it has something to consume.
            env.produce(&producer, events(3_000, 3)).await;
        }
    }

    // A wrong password: aurore stops (exit 1) with one line, and the password is not in it.
    let wrong = "not-the-scram-password";
    let args = sasl_args("SCRAM-SHA-256", wrong, ca);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut aurore = Aurore::spawn_with(&env, &[&args[..], &["--log-format", "json"]].concat(), free_port(), &env.database_url);
    let code = aurore.wait_exit(Duration::from_secs(60)).await;
    let log = aurore.log_text();
    assert_eq!(code, Some(1), "{log}");
    let complaints: Vec<&str> =
        log.lines().filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\"")).collect();
    assert_eq!(complaints.len(), 1, "one line expected:\n{log}");
    assert!(complaints[0].contains("Kafka refused the login") && complaints[0].contains("sasl.password"), "{}", complaints[0]);
    assert!(!log.contains(wrong), "{log}");
    println!("{}", complaints[0]);

    // The login is checked beside the migrations: a refusal is told while they still wait for
    // an unreachable PostgreSQL (they retry every 2 s, without end).
    let unreachable = format!("postgres://aurore:aurore@127.0.0.1:{}/aurore_events", free_port());
    let mut aurore = Aurore::spawn_with(&env, &[&args[..], &["--log-format", "json"]].concat(), free_port(), &unreachable);
    let code = aurore.wait_exit(Duration::from_secs(60)).await;
    let log = aurore.log_text();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("Kafka refused the login"), "{log}");
}
