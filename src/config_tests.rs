use super::*;
use clap::Parser;

const URL: &str = "postgres://aurore:s3cret@db.example:6543/events";

fn run(args: &[&str]) -> Result<RunArgs, String> {
    let mut argv = vec!["aurore", "run", "--database-url", URL];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
        Command::Run(r) => r.validate().map(|()| r).map_err(|e| e.to_string()),
        _ => unreachable!(),
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    let r = run(&[]).unwrap();
    assert_eq!((r.buffer_capacity(), r.buffer_capacity_bytes, r.batch_size, r.flush_workers), (24_000, 64 << 20, 4_000, 2));
    assert_eq!((r.linger, r.shutdown_timeout), (Duration::from_millis(100), Duration::from_secs(30)));
    assert_eq!(r.http_addr.to_string(), "0.0.0.0:3000");
    assert_eq!((r.topics.clone(), r.group_id.as_str(), r.max_event_bytes), (vec!["events".to_string()], "aurore", 1 << 20));
    assert_eq!(r.pool_size(), 6);
    assert_eq!((r.partitions.partition_interval, r.partitions.retention), (Duration::from_secs(86_400), None));
}

#[test]
fn the_buffer_holds_three_batches_a_worker_unless_told() {
    let capacity = |args: &[&str]| run(args).unwrap().buffer_capacity();
    assert_eq!(capacity(&["--flush-workers", "4", "--batch-size", "1000"]), 12_000);
    assert_eq!(capacity(&["--flush-workers", "4", "--buffer-capacity", "5000"]), 5_000);
    assert!(run(&["--buffer-capacity", "3000"]).unwrap_err().contains("--batch-size 4000 exceeds --buffer-capacity 3000"));
    assert!(run(&["--buffer-capacity", "0"]).unwrap_err().contains("--buffer-capacity must be at least 1"));
}

#[test]
fn partition_settings_are_checked() {
    let bad = |args: &[&str]| run(args).unwrap_err();
    assert!(
        bad(&["--partition-interval", "500ms"])
            .contains("--partition-interval (AURORE_PARTITION_INTERVAL) must be whole seconds")
    );
    assert!(bad(&["--partition-interval", "1500ms"]).contains("whole seconds"));
    assert!(bad(&["--retention", "101years"]).contains("at most 36500d, 100 years"));
    for r in ["0s", "1ms", "500ms", "1500ms"] {
        assert!(bad(&["--retention", r]).contains("--retention (AURORE_RETENTION) must be whole seconds from 1s"), "{r}");
    }
    let r = run(&["--partition-interval", "1h", "--retention", "30d"]).unwrap();
    assert_eq!(
        (r.partitions.partition_interval, r.partitions.retention),
        (Duration::from_secs(3600), Some(Duration::from_secs(30 * 86_400)))
    );
}

#[test]
fn kafka_config_pairs_parse_and_owned_keys_are_refused() {
    let r = run(&["--kafka-config", "fetch.min.bytes=1000", "--kafka-config", "security.protocol = SASL_SSL"]).unwrap();
    let pairs: Vec<(&str, &str)> = r.kafka_config.iter().map(|s| (s.key.as_str(), s.value.as_str())).collect();
    assert_eq!(pairs, [("fetch.min.bytes", "1000"), ("security.protocol", "SASL_SSL")]);
    assert!(run(&["--kafka-config", "enable.auto.commit=true"]).unwrap_err().contains("aurore sets this itself"));
    assert!(run(&["--kafka-config", "novalue"]).unwrap_err().contains("not key=value"));
    // The settings that have their own flag say which.
    assert!(run(&["--kafka-config", "group.instance.id=a"]).unwrap_err().contains("use --instance-id (AURORE_INSTANCE_ID)"));
    assert!(run(&["--kafka-config", "group.protocol=consumer"]).unwrap_err().contains("use --group-protocol"));
}

#[test]
fn static_membership_and_the_group_protocol() {
    let r = run(&[]).unwrap();
    assert_eq!(
        (r.instance_id.as_deref(), r.group_protocol, r.instance_id_wait),
        (None, GroupProtocol::Classic, Duration::from_secs(60))
    );
    let r = run(&["--instance-id", "aurore-0", "--group-protocol", "consumer", "--instance-id-wait", "5s"]).unwrap();
    assert_eq!(
        (r.instance_id.as_deref(), r.group_protocol, r.instance_id_wait),
        (Some("aurore-0"), GroupProtocol::Consumer, Duration::from_secs(5))
    );
    for bad in ["", "pod 0", "aurore/0", &"x".repeat(250)] {
        let e = run(&["--instance-id", bad]).unwrap_err();
        assert!(e.contains("--instance-id (AURORE_INSTANCE_ID) must be 1-249 of [a-zA-Z0-9._-]"), "{bad:?}: {e}");
    }
    assert!(run(&["--group-protocol", "eager"]).unwrap_err().contains("invalid value 'eager'"));
}

#[test]
fn the_liveness_bound_must_outlast_the_classic_session_timeout() {
    assert_eq!(run(&[]).unwrap().group_liveness_timeout, Duration::from_secs(60));
    let e = run(&["--group-liveness-timeout", "45s"]).unwrap_err();
    assert!(e.contains("longer than the session timeout (session.timeout.ms 45000)"), "{e}");
    let short = ["--group-liveness-timeout", "10s", "--kafka-config", "session.timeout.ms=6000"];
    assert_eq!(run(&short).unwrap().group_liveness_timeout, Duration::from_secs(10));
    let e = run(&["--group-liveness-timeout", "10s", "--kafka-config", "session.timeout.ms=soon"]).unwrap_err();
    assert!(e.contains("session.timeout.ms must be a number of milliseconds"), "{e}");
    // KIP-848: the session timeout is the broker's, not known here.
    assert!(run(&["--group-liveness-timeout", "10s", "--group-protocol", "consumer"]).is_ok());
    assert!(run(&["--group-liveness-timeout", "9s", "--group-protocol", "consumer"]).unwrap_err().contains("at least 10s"));
}

#[test]
fn bad_values_are_refused_with_a_reason() {
    for (args, says) in [
        (&["--batch-size", "0"][..], "--batch-size must be at least 1"),
        (&["--batch-size", "20001", "--buffer-capacity", "20000"][..], "a batch could never fill"),
        (&["--topics", "bad topic"][..], "--topics"),
        (&["--linger", "soon"][..], "examples"),
        (&["--buffer-resume-percent", "100"][..], "1..99"),
        (&["--max-event-bytes", "100000000"][..], "--buffer-capacity-bytes"),
        (&["--http-addr", "nowhere"][..], "invalid"),
        (&["--dead-letter-topic", "bad topic"][..], "--dead-letter-topic must be a Kafka topic name"),
        (&["--dead-letter-topic", "events"][..], "is one of --topics"),
    ] {
        let err = run(args).unwrap_err();
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn the_password_never_shows() {
    let url: DatabaseUrl = URL.parse().unwrap();
    assert_eq!(url.to_string(), "aurore@db.example:6543/events");
    assert!(!format!("{url:?}").contains("s3cret"));
    let cli = Cli::try_parse_from(["aurore", "migrate", "--database-url", URL]).unwrap();
    assert!(!format!("{cli:?}").contains("s3cret"));
    let err = "postgres://u:pw@h:99999/d".parse::<DatabaseUrl>().unwrap_err();
    assert!(!err.contains("pw"), "{err}");
    // A value that does not parse is not repeated by the argument parser either.
    for bad in
        ["mysql://aurore:S3cr3t@127.0.0.1/db", "postgres://aurore:S3cr3t@127.0.0.1:99999/db", "host=h password=S3cr3t port=x"]
    {
        for cmd in ["run", "check", "migrate"] {
            let err = Cli::try_parse_from(["aurore", cmd, "--database-url", bad]).unwrap_err().to_string();
            assert!(!err.contains("S3cr3t") && err.contains("invalid value for --database-url"), "{cmd} {bad}: {err}");
        }
    }
}

#[test]
fn produce_arguments_are_validated() {
    let parse = |args: &[&str]| {
        let mut argv = vec!["aurore", "produce"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
            Command::Produce(p) => p.validate().map(|()| p).map_err(|e| e.to_string()),
            _ => unreachable!(),
        }
    };
    let p = parse(&[]).unwrap();
    assert_eq!(
        (p.count, p.rate, p.services, p.event_types, p.payload_bytes, p.seed, p.topic.as_str()),
        (100_000, 0, 10, 5, 300, 42, "events")
    );
    assert!(parse(&["--invalid-ratio", "1.5"]).unwrap_err().contains("--invalid-ratio"));
    assert_eq!(p.id_ratio, 0.0);
    assert!(parse(&["--id-ratio=-0.1"]).unwrap_err().contains("--id-ratio must be within 0..1"));
    assert_eq!(parse(&["--id-ratio", "0.5"]).unwrap().id_ratio, 0.5);
    assert!(parse(&["--topic", "no way"]).unwrap_err().contains("topic"));
    assert!(parse(&["--services", "0"]).unwrap_err().contains("at least 1"));
}

fn log_args(args: &[&str]) -> Result<LogArgs, String> {
    let mut argv = vec!["aurore"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).map(|c| c.log).map_err(|e| e.to_string())
}

#[test]
fn log_format_defaults_to_text_on_a_terminal_and_json_elsewhere() {
    let none = log_args(&["migrate", "--database-url", URL]).unwrap();
    assert_eq!((none.log_format.as_deref(), none.log_level.as_deref()), (None, None));
    let on_terminal = none.resolve(None, None, true).unwrap();
    assert_eq!(
        on_terminal,
        LogSettings {
            format: LogFormat::Text,
            filter: "info,librdkafka=warn,rdkafka=warn,deadpool=error".into(),
            from_rust_log: false,
            ansi: true,
        }
    );
    let piped = none.resolve(None, None, false).unwrap();
    assert_eq!((piped.format, piped.ansi), (LogFormat::Json, false));
    // NO_COLOR (non-empty) turns colours off; an empty one does not.
    assert!(!none.resolve(None, Some("1"), true).unwrap().ansi);
    assert!(none.resolve(None, Some(""), true).unwrap().ansi);
}

#[test]
fn log_flags_are_global_and_never_colour_a_pipe() {
    // Before or after the subcommand.
    let before = log_args(&["--log-format", "text", "--log-level", "debug", "run", "--database-url", URL]).unwrap();
    let after = log_args(&["run", "--database-url", URL, "--log-format", "JSON", "--log-level", "WARN"]).unwrap();
    let before = before.resolve(None, None, false).unwrap();
    assert_eq!((before.format, before.ansi), (LogFormat::Text, false), "text to a pipe has no colours");
    assert_eq!(before.filter, "debug,librdkafka=warn,rdkafka=warn,deadpool=error");
    let after = after.resolve(None, None, true).unwrap();
    assert_eq!((after.format, after.ansi), (LogFormat::Json, false), "json never has colours");
    assert_eq!(after.filter, "warn,librdkafka=warn,rdkafka=warn,deadpool=error");
    let errors_only = LogArgs { log_format: None, log_level: Some("error".into()) }.resolve(None, None, false).unwrap();
    assert_eq!(errors_only.filter, "error,librdkafka=error,rdkafka=error,deadpool=error");
}

#[test]
fn rust_log_wins_over_log_level_when_set() {
    let args = LogArgs { log_format: Some("text".into()), log_level: Some("error".into()) };
    let s = args.resolve(Some("aurore=trace,rdkafka=debug"), None, false).unwrap();
    assert_eq!((s.filter.as_str(), s.from_rust_log), ("aurore=trace,rdkafka=debug,deadpool=error", true));
    // deadpool's own warnings come back only when RUST_LOG asks for them.
    let s = args.resolve(Some("info,deadpool=warn"), None, false).unwrap();
    assert_eq!(s.filter, "info,deadpool=warn");
    // Empty counts as unset.
    let s = args.resolve(Some("  "), None, false).unwrap();
    assert_eq!((s.filter.as_str(), s.from_rust_log), ("error,librdkafka=error,rdkafka=error,deadpool=error", false));
}

#[test]
fn bad_log_settings_are_one_clear_error() {
    for (args, rust_log, says) in [
        (
            LogArgs { log_format: Some("xml".into()), log_level: None },
            None,
            r#"--log-format (AURORE_LOG_FORMAT) must be text or json, got "xml""#,
        ),
        (
            LogArgs { log_format: None, log_level: Some("verbose".into()) },
            None,
            "--log-level (AURORE_LOG_LEVEL) must be one of error, warn, info, debug, trace",
        ),
        (LogArgs::default(), Some("aurore=loud"), "RUST_LOG"),
    ] {
        let err = args.resolve(rust_log, None, false).unwrap_err().to_string();
        assert!(err.starts_with("invalid configuration: ") && err.contains(says), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn the_top_level_help_describes_aurore() {
    use clap::CommandFactory;
    let cli = Cli::command();
    assert_eq!(
        cli.get_about().map(ToString::to_string).as_deref(),
        Some("Drains JSON business events from Kafka into PostgreSQL, exactly once.")
    );
    assert!(cli.get_long_about().is_none(), "{:?}", cli.get_long_about());
}

#[test]
fn bad_usage_is_one_line() {
    for (argv, says) in [
        (&["aurore", "run", "--retention", "abc"][..], "invalid value 'abc' for '--retention <RETENTION>'"),
        (&["aurore", "run", "--partition-interval", "-1s"][..], "unexpected argument '-1' found"),
        (&["aurore", "run", "--no-such-flag"][..], "unexpected argument '--no-such-flag' found"),
    ] {
        let line = usage_error(&Cli::try_parse_from(argv).unwrap_err());
        assert!(!line.contains('\n') && !line.starts_with("error"), "{argv:?}: {line}");
        assert!(line.contains(says), "{argv:?}: {line}");
    }
}

/// librdkafka's own refusals of settings (a mistyped key, a bad value, for properties of every
/// kind) never carry a value out once redacted: values generated with letters, digits and
/// punctuation, against the real library.
#[test]
fn librdkafka_refusals_are_redacted_of_every_value() {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::BaseConsumer;
    let keys = ["sasl.pasword", "sasl.password.x", "security.protocol", "ssl.key.password", "sasl.mechanism", "fetch.min.bytes"];
    let alphabet: Vec<char> = "abcXYZ019_-.@:/+=!\"' é".chars().collect();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut refused = 0;
    for case in 0..300 {
        let len = 1 + case % 24;
        let mut value = String::new();
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            value.push(alphabet[(seed % alphabet.len() as u64) as usize]);
        }
        let value = value.trim().to_owned();
        if value.len() < 4 {
            continue;
        }
        let setting = KafkaSetting { key: keys[case % keys.len()].to_owned(), value: value.clone() };
        let mut c = ClientConfig::new();
        c.set("group.id", "g").set(&setting.key, &setting.value);
        let Err(e) = c.create::<BaseConsumer>() else { continue };
        refused += 1;
        let text = redact_kafka_error(std::slice::from_ref(&setting), &e);
        assert!(!text.contains(&value), "{value:?} in {text:?}");
        assert!(text.contains(&setting.key) || text.contains("Client"), "the refusal still says what: {text:?}");
    }
    assert!(refused > 100, "only {refused} settings refused");
    // The two the newcomer trial found, word for word.
    let s = |k: &str, v: &str| KafkaSetting { key: k.into(), value: v.into() };
    let refusal = |k: &str, v: &str| ClientConfig::new().set(k, v).create::<BaseConsumer>().err().expect("refused");
    let e = refusal("sasl.pasword", "TopSecret99");
    assert_eq!(
        redact_kafka_error(&[s("sasl.pasword", "TopSecret99")], &e),
        "Client config error: No such configuration property: \"sasl.pasword\" sasl.pasword <redacted>"
    );
    let e = refusal("security.protocol", "bogus");
    assert!(!redact_kafka_error(&[s("security.protocol", "bogus")], &e).contains("bogus"));
    // A value found inside a longer word is that word, not the value, and stays.
    assert_eq!(redact_word("Client config: abc abcd xabc abc.", "abc"), "Client config: <redacted> abcd xabc <redacted>.");
}

/// Every duration option of `run` (each one that takes "10s") refuses a duration past
/// `MAX_AGE` (100 years) with one clear line, and takes the longest: a duration added to a clock
/// reading must not overflow (`--shutdown-timeout 18446744073709551615s` panicked on SIGTERM).
#[test]
fn every_duration_option_is_bounded() {
    use clap::CommandFactory;
    let command = Cli::command();
    let run_command = command.find_subcommand("run").expect("run");
    let parses = |flag: &str, value: &str| {
        let mut argv = vec!["aurore".to_string(), "run".into(), "--database-url".into(), URL.into(), flag.into(), value.into()];
        if flag == "--instance-id-wait" {
            argv.extend(["--instance-id".into(), "a".into()]);
        }
        Cli::try_parse_from(argv).map(|_| ()).map_err(|e| e.to_string())
    };
    let mut durations = Vec::new();
    for arg in run_command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("--{long}");
        if !arg.get_action().takes_values() || parses(&flag, "10s").is_err() || parses(&flag, "not-a-duration").is_ok() {
            continue;
        }
        durations.push(flag.clone());
        for huge in ["18446744073709551615s", "36501d", "1000years"] {
            let e = parses(&flag, huge).expect_err(&flag);
            assert!(e.contains("longer than any option takes (at most 36500d, 100 years)"), "{flag} {huge}: {e}");
        }
        assert!(parses(&flag, "36500d").is_ok(), "{flag} takes the longest duration");
    }
    // linger, shutdown, rebalance drain, liveness, retries (2), connect, partitions (2), instance id wait.
    assert!(durations.len() >= 10, "duration options found: {durations:?}");
}
