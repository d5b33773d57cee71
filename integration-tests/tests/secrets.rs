//! No secret in any output: passwords in `--database-url` (URL and `key=value`), in `PGPASSWORD`
//! and in `--kafka-config` (`sasl.password`, `ssl.key.password`) go through every path that can
//! print them, and none appears in stdout or stderr: argument errors, `--help` with the variables
//! set, start-up at debug level, a PostgreSQL that cannot be reached and one that refuses the
//! password, a broker that refuses the SASL login, `check`, `produce`, and the JSON and text log
//! formats. Each output is also checked for the password percent-encoded and quoted as given.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{Env, aurore_bin, free_port};

/// What a run printed (stdout and stderr together) and how it ended.
struct Output {
    what: String,
    text: String,
}

/// Runs aurore with `args` and `env` (and nothing else from this process's environment that
/// could set a password) until it exits, or until its output contains `until` (then SIGTERM),
/// or `within` passes (then SIGTERM too: the output so far is what is checked).
fn run(what: &str, args: &[&str], env: &[(&str, &str)], until: Option<&str>, within: Duration) -> Output {
    let dir = std::env::temp_dir().join("aurore-it");
    std::fs::create_dir_all(&dir).unwrap();
    let log: PathBuf = dir.join(format!("secrets-{}-{}.log", std::process::id(), fastrand::u32(..)));
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(aurore_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") || k.starts_with("AURORE_") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().copied())
        .env("HOME", &dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let read = || {
        let mut s = String::new();
        std::fs::File::open(&log).unwrap().read_to_string(&mut s).unwrap();
        s
    };
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let text = read();
        if until.is_some_and(|u| text.contains(u)) || Instant::now() > deadline {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let stop = Instant::now() + Duration::from_secs(40);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > stop {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50)); // polling the exit, not synchronising
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = read();
    let _ = std::fs::remove_file(&log);
    Output { what: what.to_owned(), text }
}

fn assert_clean(out: &Output, secret: &str) {
    let encoded: String = percent_encode(secret);
    for form in [secret, encoded.as_str()] {
        assert!(!out.text.contains(form), "{}: the password ({form}) appears in the output:\n{}", out.what, out.text);
    }
    assert!(!out.text.is_empty() || out.what.starts_with("quiet"), "{}: printed nothing", out.what);
}

fn percent_encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_any_output() {
    let env = Env::new("secrets", 1, &[]).await;
    // A password with the characters that need quoting or encoding somewhere.
    let secret = format!("Pw-{}:x'y z@", fastrand::u32(..));
    let url_secret = percent_encode(&secret);
    let kv_secret = secret.replace('\'', "\\'");
    let dead_port = free_port(); // nothing listens: connection refused
    let brokers = env.stack.brokers.clone();
    let right_db = env.database_url.clone();
    // The stack's own database without its password, and with the wrong one.
    let (head, tail) = right_db.split_once('@').unwrap();
    let user = head.rsplit_once(':').map_or(head, |(u, _)| u);
    let no_password = format!("{user}@{tail}");
    let wrong_pw_url = format!("{user}:{url_secret}@{tail}");
    let unreachable_url = format!("postgres://aurore:{url_secret}@127.0.0.1:{dead_port}/aurore_events");
    let kv_url = format!("host=127.0.0.1 port={dead_port} user=aurore dbname=x password='{kv_secret}'");
    let sasl = [
        "security.protocol=SASL_PLAINTEXT".to_string(),
        "sasl.mechanism=SCRAM-SHA-256".to_string(),
        "sasl.username=aurore".to_string(),
        format!("sasl.password={secret}"),
        format!("ssl.key.password={secret}"),
    ];
    let sasl_env = sasl.join(";");
    let mut outputs = Vec::new();
    let t = Duration::from_secs(60);

    // Argument errors: malformed strings that carry the password.
    for (i, bad) in [
        format!("postgres://aurore:{url_secret}@127.0.0.1:99999/db"),
        format!("mysql://aurore:{url_secret}@127.0.0.1/db"),
        format!("postgres://aurore:{url_secret}@127.0.0.1/db?sslmode={url_secret}"),
        format!("postgres://aurore:{url_secret}@127.0.0.1/db?sslrootcert=system&sslmode=require"),
        format!("host=127.0.0.1 password='{kv_secret}"),
        format!("host=127.0.0.1 password={kv_secret} port=x"),
        format!("host=127.0.0.1 {kv_secret}"),
        format!("host=127.0.0.1 password={kv_secret} sslmode=verify-full"),
    ]
    .iter()
    .enumerate()
    {
        for cmd in ["run", "check", "migrate"] {
            outputs.push(run(&format!("bad URL {i} ({cmd})"), &[cmd, "--database-url", bad], &[], None, t));
        }
        outputs.push(run(&format!("bad DATABASE_URL {i}"), &["run"], &[("DATABASE_URL", bad)], None, t));
    }
    for (i, bad) in
        [format!("sasl.password{secret}"), format!("={secret}"), format!("sasl.password={secret};{secret}")].iter().enumerate()
    {
        outputs.push(run(
            &format!("bad --kafka-config {i}"),
            &["run", "--database-url", &right_db, "--kafka-config", bad],
            &[],
            None,
            t,
        ));
        outputs.push(run(
            &format!("bad AURORE_KAFKA_CONFIG {i}"),
            &["run", "--database-url", &right_db],
            &[("AURORE_KAFKA_CONFIG", bad)],
            None,
            t,
        ));
        outputs.push(run(&format!("bad produce --kafka-config {i}"), &["produce", "--kafka-config", bad], &[], None, t));
    }
    // An unknown librdkafka property next to the password, and an invalid value.
    outputs.push(run(
        "librdkafka refuses a setting",
        &[
            "run",
            "--database-url",
            &right_db,
            "--kafka-config",
            &format!("sasl.password={secret}"),
            "--kafka-config",
            "no.such=1",
        ],
        &[],
        None,
        t,
    ));

    // librdkafka's refusal of a setting ends with its value: a mistyped password key, and the
    // password given as a value librdkafka refuses (the newcomer trial's finding).
    for (i, refused) in [format!("sasl.pasword={secret}"), format!("security.protocol={secret}")].iter().enumerate() {
        for cmd in ["run", "check"] {
            outputs.push(run(
                &format!("librdkafka refuses {i} ({cmd})"),
                &[cmd, "--database-url", &right_db, "--kafka-config", refused],
                &[],
                None,
                t,
            ));
        }
        outputs.push(run(
            &format!("librdkafka refuses {i} (AURORE_KAFKA_CONFIG)"),
            &["run", "--database-url", &right_db],
            &[("AURORE_KAFKA_CONFIG", refused)],
            None,
            t,
        ));
        outputs.push(run(&format!("librdkafka refuses {i} (produce)"), &["produce", "--kafka-config", refused], &[], None, t));
    }

    // --help with every variable set.
    let vars =
        [("DATABASE_URL", unreachable_url.as_str()), ("AURORE_KAFKA_CONFIG", sasl_env.as_str()), ("PGPASSWORD", secret.as_str())];
    for cmd in
        [&["--help"][..], &["run", "--help"], &["check", "--help"], &["migrate", "--help"], &["dead-letters", "list", "--help"]]
    {
        outputs.push(run(&format!("{cmd:?}"), cmd, &vars, None, t));
    }

    // Connection failures, at debug level, in both log formats.
    for format in ["json", "text"] {
        let common = ["--log-level", "debug", "--log-format", format];
        outputs.push(run(
            &format!("migrate, PostgreSQL unreachable ({format})"),
            &[&["migrate", "--database-url", &unreachable_url, "--db-connect-timeout", "2s"][..], &common].concat(),
            &[],
            None,
            t,
        ));
        outputs.push(run(
            &format!("migrate, key=value, unreachable ({format})"),
            &[&["migrate", "--database-url", &kv_url, "--db-connect-timeout", "2s"][..], &common].concat(),
            &[],
            None,
            t,
        ));
        outputs.push(run(
            &format!("migrate, wrong password in the URL ({format})"),
            &[&["migrate", "--database-url", &wrong_pw_url][..], &common].concat(),
            &[],
            None,
            t,
        ));
        outputs.push(run(
            &format!("migrate, wrong PGPASSWORD ({format})"),
            &[&["migrate", "--database-url", &no_password][..], &common].concat(),
            &[("PGPASSWORD", &secret)],
            None,
            t,
        ));
        // run: PostgreSQL fine, the broker refuses the SASL login (it has no SASL listener on
        // this port); debug logs for as long as it takes to say so, then SIGTERM.
        let port = free_port().to_string();
        let mut args = vec!["run", "--database-url", &right_db, "--kafka-brokers", &brokers, "--http-addr"];
        let addr = format!("127.0.0.1:{port}");
        args.push(&addr);
        args.extend(["--topics", &env.topic, "--group-id", &env.group]);
        args.extend(common);
        outputs.push(run(
            &format!("run, the broker refuses SASL ({format})"),
            &args,
            &[("AURORE_KAFKA_CONFIG", sasl_env.as_str())],
            None,
            Duration::from_secs(15),
        ));
        outputs.push(run(
            &format!("run, PostgreSQL unreachable ({format})"),
            &[
                "run",
                "--database-url",
                &unreachable_url,
                "--kafka-brokers",
                &brokers,
                "--http-addr",
                &addr,
                "--db-connect-timeout",
                "1s",
            ]
            .iter()
            .chain(&common)
            .copied()
            .collect::<Vec<_>>(),
            &[("AURORE_KAFKA_CONFIG", sasl_env.as_str())],
            Some("retr"),
            Duration::from_secs(15),
        ));
        let check_args: Vec<&str> =
            ["check", "--database-url", &wrong_pw_url, "--kafka-brokers", &brokers, "--topics", &env.topic]
                .iter()
                .chain(&common)
                .copied()
                .collect();
        outputs.push(run(&format!("check ({format})"), &check_args, &[("AURORE_KAFKA_CONFIG", sasl_env.as_str())], None, t));
        let produce_args: Vec<&str> = ["produce", "--kafka-brokers", &brokers, "--topic", &env.topic, "--count", "1"]
            .iter()
            .chain(&common)
            .copied()
            .collect();
        let produce_args: Vec<String> = produce_args
            .iter()
            .map(|s| s.to_string())
            .chain(sasl.iter().flat_map(|s| ["--kafka-config".to_string(), s.clone()]))
            .collect();
        let produce_args: Vec<&str> = produce_args.iter().map(String::as_str).collect();
        outputs.push(run(
            &format!("produce, the broker refuses SASL ({format})"),
            &produce_args,
            &[],
            None,
            Duration::from_secs(15),
        ));
    }

    let mut table = Vec::new();
    for out in &outputs {
        assert_clean(out, &secret);
        table.push(format!("{:<55} {:>6} bytes, clean", out.what, out.text.len()));
    }
    println!("{}", table.join("\n"));
    // The paths were really taken: the refusals and failures said what they are.
    let said = |what: &str, text: &str| {
        let out = outputs.iter().find(|o| o.what == what).unwrap_or_else(|| panic!("no output {what}"));
        assert!(out.text.contains(text), "{what}: expected {text:?} in:\n{}", out.text);
    };
    said("bad URL 0 (run)", "invalid value for --database-url");
    said("bad --kafka-config 0", "invalid value for --kafka-config");
    said("librdkafka refuses 0 (run)", "sasl.pasword <redacted>");
    said("librdkafka refuses 0 (check)", "sasl.pasword");
    said("librdkafka refuses 1 (produce)", "security.protocol");
    said("migrate, wrong password in the URL (json)", "password authentication failed");
    said("migrate, wrong PGPASSWORD (text)", "password authentication failed");
    said("migrate, PostgreSQL unreachable (text)", "cannot connect");
    said("[\"run\", \"--help\"]", "AURORE_KAFKA_CONFIG");
    said("run, the broker refuses SASL (text)", "DEBUG");
}
