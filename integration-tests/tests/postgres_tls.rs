//! PostgreSQL TLS, differential against libpq: for every `sslmode` × {server TLS on, off} ×
//! {root certificate right, none, wrong} × {right host name, wrong one} (and a server that admits
//! TLS connections only), aurore connects exactly
//! when `psql` does with the same connection string, and uses TLS exactly when it does
//! (`pg_stat_ssl`). Then each kind of failure is one line from `aurore migrate` naming the host,
//! the cause and the setting.
//!
//! The server is a scratch PostgreSQL 15 cluster of the stack's own binaries (`initdb` as the
//! `postgres` user), with a CA and certificates made here with `openssl`; it is stopped when the
//! test ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aurore::config::{DatabaseUrl, Surroundings};
use aurore::db::{Tls, describe};
use integration_tests::{aurore_bin, free_port, wait_until};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PASSWORD: &str = "tls-test-pw";
const MODES: [&str; 6] = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(dir: &Path, args: &str) {
    sh(Command::new("openssl").current_dir(dir).args(args.split_whitespace()));
}

/// A CA, and a server certificate for `localhost` signed by it.
fn certificates(dir: &Path) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for ca in ["ca", "other-ca"] {
        openssl(dir, &format!("req -x509 {ec} -keyout {ca}.key -out {ca}.crt -days 2 -subj /CN=aurore-test-{ca}"));
    }
    openssl(dir, &format!("req {ec} -keyout server.key -out server.csr -subj /CN=localhost"));
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(dir, "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf");
    // A client certificate for the role aurore (libpq's `cert` authentication).
    openssl(dir, &format!("req {ec} -keyout client.key -out client.csr -subj /CN=aurore"));
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap(); // v3: webpki reads no v1
    openssl(dir, "x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 -extfile client.cnf");
    for key in ["server.key", "client.key"] {
        sh(Command::new("chmod").arg("600").arg(dir.join(key)));
    }
}

/// A scratch cluster on `port`, TLS configured (and switched by [`Cluster::tls`]).
struct Cluster {
    dir: PathBuf,
    port: u16,
}

fn as_postgres(args: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).args(args);
    c
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let data = dir.join("data");
        let port = free_port();
        sh(Command::new("chown").args(["-R", "postgres"]).arg(dir));
        sh(&mut as_postgres(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ]));
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\n\
             ssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
            dir.display(),
            dir.join("server.crt").display(),
            dir.join("server.key").display(),
            dir.join("ca.crt").display()
        );
        let mut pg_conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        pg_conf.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), pg_conf).unwrap();
        sh(&mut as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-l",
            dir.join("log").to_str().unwrap(),
            "-w",
            "start",
        ]));
        let cluster = Cluster { dir: dir.to_path_buf(), port };
        cluster.sql(&format!("CREATE ROLE aurore LOGIN PASSWORD '{PASSWORD}'"));
        cluster
    }

    fn sql(&self, sql: &str) -> String {
        sh(&mut as_postgres(&[
            "psql",
            "-X",
            "-At",
            "-h",
            self.dir.to_str().unwrap(),
            "-p",
            &self.port.to_string(),
            "-d",
            "postgres",
            "-c",
            sql,
        ]))
    }

    /// `hostssl`: only TLS connections are admitted (a `hostssl` line), so `allow` must retry.
    fn admit_plain(&self, plain: bool) {
        self.hba(if plain { "host all all 127.0.0.1/32 scram-sha-256" } else { "hostssl all all 127.0.0.1/32 scram-sha-256" });
    }

    fn hba(&self, line: &str) {
        std::fs::write(self.dir.join("data/pg_hba.conf"), format!("local all all trust\n{line}\n")).unwrap();
        self.sql("SELECT pg_reload_conf()");
    }

    async fn tls(&self, on: bool) {
        self.sql(&format!("ALTER SYSTEM SET ssl = {}", if on { "on" } else { "off" }));
        self.sql("SELECT pg_reload_conf()");
        let want = if on { "on" } else { "off" };
        wait_until("the server's ssl setting", Duration::from_secs(20), || async {
            (self.sql("SHOW ssl").trim() == want).then_some(())
        })
        .await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = as_postgres(&[&format!("{PG_BIN}/pg_ctl"), "-D", data.to_str().unwrap(), "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TLS_USED: &str = "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)";

/// What libpq does: `Ok(TLS used)` or its error.
fn psql(conninfo: &str, home: &Path) -> Result<bool, String> {
    let mut cmd = Command::new("psql");
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    let out =
        cmd.args(["-X", "-At", "-c", TLS_USED, conninfo]).env("HOME", home).env("PGCONNECT_TIMEOUT", "10").output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "t")
    } else {
        Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_owned())
    }
}

/// What aurore does with the same string and an empty environment.
async fn aurore(conninfo: &str, home: &Path) -> Result<bool, String> {
    let url = DatabaseUrl::resolve(conninfo, &Surroundings { var: &|_| None, home: Some(home.to_path_buf()) })?;
    let tls = Tls::new(&url.tls).map_err(|e| e.to_string())?;
    let mut config = url.config.clone();
    config.connect_timeout(Duration::from_secs(10));
    let (client, connection) = tls.connect(&config).await.map_err(|e| describe(&e))?;
    tokio::spawn(connection);
    let row = client.query_one(TLS_USED, &[]).await.map_err(|e| describe(&e))?;
    Ok(row.get(0))
}

fn verdict(r: &Result<bool, String>) -> &'static str {
    match r {
        Ok(true) => "TLS",
        Ok(false) => "plain",
        Err(_) => "refused",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurore_connects_exactly_when_psql_does() {
    let dir = std::env::temp_dir().join(format!("aurore-it/pgtls-{}-{}", std::process::id(), fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let home = dir.join("home"); // no ~/.postgresql: the root certificate is what the cell gives
    std::fs::create_dir_all(&home).unwrap();
    certificates(&dir);
    let cluster = Cluster::start(&dir);
    let (ca, other_ca) = (dir.join("ca.crt"), dir.join("other-ca.crt"));

    let mut table =
        vec![format!("{:<11} {:<7} {:<9} {:<11} {:<8} {:<8} agree", "sslmode", "server", "root cert", "host", "psql", "aurore")];
    let mut disagreements = Vec::new();
    // The matrix of the issue (TLS on, off), and a server that admits TLS only, where `allow`
    // takes its second try.
    for (server_tls, plain, server) in [(true, true, "TLS on"), (false, true, "TLS off"), (true, false, "hostssl")] {
        cluster.tls(server_tls).await;
        cluster.admit_plain(plain);
        wait_until("pg_hba.conf reloaded", Duration::from_secs(20), || async {
            (cluster.sql("SELECT count(*) FROM pg_hba_file_rules WHERE type = 'hostssl'").trim() == if plain { "0" } else { "1" })
                .then_some(())
        })
        .await;
        for mode in MODES {
            for (root, root_name) in [(Some(&ca), "right"), (None, "none"), (Some(&other_ca), "wrong")] {
                for host in ["localhost", "wrong.invalid"] {
                    let mut conninfo = format!(
                        "host={host} hostaddr=127.0.0.1 port={} user=aurore password={PASSWORD} dbname=postgres sslmode={mode}",
                        cluster.port
                    );
                    if let Some(root) = root {
                        conninfo.push_str(&format!(" sslrootcert={}", root.display()));
                    }
                    let (theirs, ours) = (psql(&conninfo, &home), aurore(&conninfo, &home).await);
                    let agree = verdict(&theirs) == verdict(&ours);
                    table.push(format!(
                        "{mode:<11} {server:<7} {root_name:<9} {host:<11} {:<8} {:<8} {}",
                        verdict(&theirs),
                        verdict(&ours),
                        if agree { "yes" } else { "NO" }
                    ));
                    if !agree {
                        disagreements.push(format!("{conninfo}\n  psql: {theirs:?}\n  aurore: {ours:?}"));
                    }
                }
            }
        }
    }
    println!("{}", table.join("\n"));
    assert_eq!(table.len(), 1 + 108);
    assert!(disagreements.is_empty(), "{} of 108 cells disagree:\n{}", disagreements.len(), disagreements.join("\n"));

    // Client certificates: a server that authenticates by certificate only.
    cluster.hba("hostssl all all 127.0.0.1/32 cert");
    wait_until("pg_hba.conf reloaded", Duration::from_secs(20), || async {
        (cluster.sql("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'cert'").trim() == "1").then_some(())
    })
    .await;
    let client = format!("sslcert={} sslkey={}", dir.join("client.crt").display(), dir.join("client.key").display());
    for (mode, with_cert) in [("require", true), ("require", false), ("verify-full", true), ("verify-full", false)] {
        let conninfo = format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=aurore dbname=postgres sslmode={mode} sslrootcert={} {}",
            cluster.port,
            ca.display(),
            if with_cert { client.as_str() } else { "" }
        );
        let (theirs, ours) = (psql(&conninfo, &home), aurore(&conninfo, &home).await);
        println!("client certificate {with_cert:<5} {mode:<11} psql {:<8} aurore {}", verdict(&theirs), verdict(&ours));
        assert_eq!(verdict(&theirs), verdict(&ours), "{conninfo}\n  psql: {theirs:?}\n  aurore: {ours:?}");
        assert_eq!(verdict(&ours), if with_cert { "TLS" } else { "refused" }, "{conninfo}: {ours:?}");
    }
    cluster.admit_plain(true);

    // Each failure: one line naming the host, the cause, and the setting that changes it.
    cluster.tls(true).await;
    let base = format!("host=localhost hostaddr=127.0.0.1 port={} user=aurore dbname=postgres", cluster.port);
    let cases = [
        (
            format!("{base} password={PASSWORD} sslmode=verify-ca sslrootcert={}", other_ca.display()),
            "not signed by a CA in sslrootcert",
        ),
        (
            format!(
                "{} password={PASSWORD} sslmode=verify-full sslrootcert={}",
                base.replace("host=localhost", "host=wrong.invalid"),
                ca.display()
            ),
            "sslmode=verify-ca",
        ),
        (format!("{base} password=not-the-password sslmode=require"), "PGPASSWORD"),
        (
            format!("{base} password={PASSWORD} sslmode=verify-full sslrootcert={}", dir.join("missing.crt").display()),
            "sslrootcert",
        ),
    ];
    for (conninfo, says) in &cases {
        expect_one_line(conninfo, says, &home);
    }
    cluster.tls(false).await;
    expect_one_line(&format!("{base} password={PASSWORD} sslmode=require"), "does not offer TLS", &home);
}

fn expect_one_line(conninfo: &str, says: &str, home: &Path) {
    let mut cmd = Command::new(aurore_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") || k.starts_with("AURORE_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["migrate", "--db-connect-timeout", "10s", "--database-url", conninfo])
        .env("HOME", home)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!out.status.success(), "{conninfo}: connected");
    assert_eq!(lines.len(), 1, "{conninfo}: one line expected:\n{stderr}");
    let host = if conninfo.contains("wrong.invalid") { "wrong.invalid" } else { "localhost" };
    assert!(lines[0].contains(says) && lines[0].contains(host), "{conninfo}: expected {says:?} and {host:?} in:\n{}", lines[0]);
    assert!(!lines[0].contains(PASSWORD), "{}", lines[0]);
    println!("{says:<35} {}", lines[0]);
}
