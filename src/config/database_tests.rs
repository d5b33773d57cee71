use std::collections::HashMap;

use super::*;

fn resolve(s: &str, vars: &[(&str, &str)], home: Option<&Path>) -> Result<DatabaseUrl, String> {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let var = move |name: &str| vars.get(name).cloned();
    DatabaseUrl::resolve(s, &Surroundings { var: &var, home: home.map(Path::to_path_buf) })
}

fn hosts(u: &DatabaseUrl) -> Vec<String> {
    u.config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect()
}

#[test]
fn the_string_wins_then_the_environment_then_libpq_defaults() {
    let env =
        [("PGHOST", "envhost"), ("PGPORT", "6000"), ("PGUSER", "envuser"), ("PGPASSWORD", "envpw"), ("PGDATABASE", "envdb")];
    let u = resolve("postgres://u:pw@h:7000/db", &env, None).unwrap();
    assert_eq!((hosts(&u), u.config.get_ports().to_vec()), (vec!["h".to_string()], vec![7000]));
    assert_eq!((u.config.get_user(), u.config.get_password(), u.config.get_dbname()), (Some("u"), Some(&b"pw"[..]), Some("db")));
    let u = resolve("", &env, None).unwrap();
    assert_eq!((hosts(&u), u.config.get_ports().to_vec()), (vec!["envhost".to_string()], vec![6000]));
    assert_eq!(
        (u.config.get_user(), u.config.get_password(), u.config.get_dbname()),
        (Some("envuser"), Some(&b"envpw"[..]), Some("envdb"))
    );
    // The database defaults to the user's name, the user to the OS user.
    let u = resolve("postgres://h", &[("USER", "os")], None).unwrap();
    assert_eq!((u.config.get_user(), u.config.get_dbname()), (Some("os"), Some("os")));
    assert_eq!(u.tls.mode, SslMode::Prefer);
    // Several hosts, a socket among them.
    let u = resolve("dbname=d", &[("PGHOST", "a,/run/pg"), ("USER", "x")], None).unwrap();
    assert_eq!(hosts(&u), ["a", "/run/pg"]);
    assert!(resolve("dbname=d", &[("PGPORT", "x"), ("USER", "x")], None).unwrap_err().contains("PGPORT"));
}

#[test]
fn every_sslmode_and_its_files() {
    for (mode, want) in [
        ("disable", SslMode::Disable),
        ("allow", SslMode::Allow),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ] {
        let url = format!("postgres://u@h/d?sslmode={mode}&sslrootcert=%2Fca.pem&application_name=x");
        let u = resolve(&url, &[], None).unwrap();
        assert_eq!((u.tls.mode, u.tls.root_cert.clone()), (want, Some(RootCert::File("/ca.pem".into()))));
        assert_eq!(u.config.get_application_name(), Some("x"));
        let kv = format!("host=h user=u dbname=d sslmode = {mode} sslrootcert='/a dir/ca.pem'");
        let u = resolve(&kv, &[], None).unwrap();
        assert_eq!((u.tls.mode, u.tls.root_cert), (want, Some(RootCert::File("/a dir/ca.pem".into()))));
        let u = resolve("host=h user=u dbname=d sslrootcert=/ca", &[("PGSSLMODE", mode)], None).unwrap();
        assert_eq!(u.tls.mode, want);
    }
    assert!(resolve("postgres://u@h/d?sslmode=verify", &[], None).unwrap_err().contains("one of disable"));
    assert!(resolve("host=h", &[("PGSSLMODE", "on"), ("USER", "x")], None).unwrap_err().contains("PGSSLMODE"));
    // Verifying needs a CA; system roots default to verify-full and refuse weaker modes.
    assert!(resolve("postgres://u@h/d?sslmode=verify-full", &[], None).unwrap_err().contains("sslrootcert"));
    let u = resolve("postgres://u@h/d?sslrootcert=system", &[], None).unwrap();
    assert_eq!((u.tls.mode, u.tls.root_cert), (SslMode::VerifyFull, Some(RootCert::System)));
    assert!(resolve("postgres://u@h/d?sslrootcert=system&sslmode=require", &[], None).unwrap_err().contains("verify-full"));
    // Client certificates: given, or ~/.postgresql's when present.
    let u = resolve("postgres://u@h/d?sslcert=/c.pem&sslkey=/k.pem", &[], None).unwrap();
    assert_eq!(u.tls.client_cert, Some(("/c.pem".into(), "/k.pem".into())));
    let home = std::env::temp_dir().join(format!("aurore-home-{}", std::process::id()));
    std::fs::create_dir_all(home.join(".postgresql")).unwrap();
    for f in ["root.crt", "postgresql.crt"] {
        std::fs::write(home.join(".postgresql").join(f), "").unwrap();
    }
    let u = resolve("postgres://u@h/d", &[], Some(&home)).unwrap();
    assert_eq!(u.tls.root_cert, Some(RootCert::File(home.join(".postgresql/root.crt"))));
    assert_eq!(u.tls.client_cert, Some((home.join(".postgresql/postgresql.crt"), home.join(".postgresql/postgresql.key"))));
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn the_password_file_as_libpq_reads_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("aurore-pgpass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgpass");
    std::fs::write(&file, "# comment\nother:*:*:*:no\nh:5432:d:u:first\\:pw\\\\\n*:*:*:u:second\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let env = [("PGPASSFILE", file.to_str().unwrap())];
    let pw = |s: &str| resolve(s, &env, None).unwrap().config.get_password().map(|p| String::from_utf8(p.to_vec()).unwrap());
    assert_eq!(pw("postgres://u@h/d").as_deref(), Some("first:pw\\"));
    assert_eq!(pw("postgres://u@h:6000/d").as_deref(), Some("second"));
    assert_eq!(pw("postgres://u:given@h/d").as_deref(), Some("given"));
    assert_eq!(pw("postgres://v@h/d"), None);
    // Readable by others: ignored, as libpq does.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(pw("postgres://u@h/d"), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_never_repeat_the_string() {
    for bad in [
        "host=h password='S3cr3t",
        "host=h password=S3cr3t\\",
        "host=h S3cr3t",
        "host=h password=S3cr3t port=x",
        "postgres://u:S3cr3t@h/d?sslmode=S3cr3t",
        "postgres://u:S3cr3t@h/d?sslrootcert=%FF%S3cr3t",
        "postgres://u:S3cr3t@h:99999/d",
        "host=h password=S3cr3t sslmode=verify-ca",
        "host=h password=S3cr3t S3cr3t=1",
    ] {
        let err = resolve(bad, &[("USER", "x")], None).unwrap_err();
        assert!(!err.contains("S3cr3t"), "{bad}: {err}");
    }
}

#[test]
fn quoted_values_reach_tokio_postgres_unchanged() {
    let u = resolve(r"host=h user=u dbname=d password='it\'s a \\ pw' application_name=a\ b", &[], None).unwrap();
    assert_eq!(u.config.get_password(), Some(&br"it's a \ pw"[..]));
    assert_eq!(u.config.get_application_name(), Some("a b"));
}
