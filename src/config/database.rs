//! `--database-url`, read as libpq reads a connection string.
//!
//! The string is a URL (`postgres://user:password@host:port/dbname?sslmode=verify-full`) or
//! libpq's `key=value` form (`host=db sslmode=require`, values quoted with `'…'` and `\`). What it
//! leaves out comes from the environment libpq reads ([libpq: environment variables]):
//! `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, the password file (`PGPASSFILE`, else
//! `~/.pgpass`), `PGDATABASE`, `PGAPPNAME`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and
//! `PGSSLKEY`; then libpq's defaults (the OS user, a database named after the user, the socket
//! directory `/var/run/postgresql`, port 5432, `~/.postgresql/root.crt`, `postgresql.crt` and
//! `postgresql.key` when they exist).
//!
//! The TLS settings ([`TlsSettings`]) keep libpq's meanings ([libpq: SSL support], table 34.1):
//! `sslmode` is one of [`SslMode`]; with a root certificate (`sslrootcert`, or
//! `~/.postgresql/root.crt`), `prefer` and `require` also verify the server's chain, as
//! `verify-ca` does; `sslrootcert=system` (libpq 16) uses the platform's trusted roots and makes
//! `verify-full` the default (a weaker mode is refused with it).
//!
//! Errors never repeat the string or a value from it: it may hold a password.
//!
//! [libpq: environment variables]: https://www.postgresql.org/docs/current/libpq-envars.html
//! [libpq: SSL support]: https://www.postgresql.org/docs/current/libpq-ssl.html

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio_postgres::config::Host;

/// libpq's `sslmode` ([libpq: SSL support](https://www.postgresql.org/docs/current/libpq-ssl.html#LIBPQ-SSL-PROTECTION)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Without TLS first; with TLS if the server refuses that connection.
    Allow,
    /// With TLS first; without it if the server does not offer TLS or the handshake fails.
    Prefer,
    /// TLS always; the server's certificate is verified only if a root certificate is given.
    Require,
    /// TLS, and the server's certificate is signed by a trusted CA.
    VerifyCa,
    /// As `VerifyCa`, and the certificate is for the host name connected to.
    VerifyFull,
}

impl SslMode {
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str, from: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(format!("{from}: sslmode is one of disable, allow, prefer, require, verify-ca, verify-full")),
        })
    }
}

/// Where the CAs that may sign the server's certificate come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// The platform's trusted roots (`sslrootcert=system`).
    System,
}

/// The TLS half of the connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `None`: no `sslrootcert` and no `~/.postgresql/root.crt`.
    pub root_cert: Option<RootCert>,
    /// The client certificate and its key (PEM files), when `sslcert` is given or
    /// `~/.postgresql/postgresql.crt` exists.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A connection string resolved as libpq would, that never shows its password.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// Everything but TLS, with the environment's values filled in.
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
}

/// What libpq reads besides the string: the environment and the home directory. Tests pass
/// their own.
pub struct Surroundings<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub home: Option<PathBuf>,
}

impl Surroundings<'_> {
    /// This process's environment and `$HOME`.
    pub fn process() -> Surroundings<'static> {
        Surroundings { var: &|name| std::env::var(name).ok(), home: std::env::var_os("HOME").map(PathBuf::from) }
    }

    /// A variable, unless unset or empty (libpq ignores empty ones).
    fn get(&self, name: &str) -> Option<String> {
        (self.var)(name).filter(|v| !v.is_empty())
    }

    fn dot_postgresql(&self, file: &str) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(".postgresql").join(file)).filter(|p| p.exists())
    }
}

/// The keys aurore reads itself (tokio-postgres knows only three `sslmode`s and no files).
const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl DatabaseUrl {
    /// Reads `s` and fills what it leaves out from `env`, as libpq does. The error never
    /// repeats `s` or a part of it.
    pub fn resolve(s: &str, env: &Surroundings) -> Result<DatabaseUrl, String> {
        let (rest, tls_keys) = split_tls_keys(s)?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| format!("not a PostgreSQL connection string ({e})"))?;
        let given = |key: &str| tls_keys.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());

        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            match env.get("PGHOST") {
                Some(hosts) => hosts.split(',').for_each(|h| add_host(&mut config, h)),
                None if Path::new(SOCKET_DIRECTORY).exists() => add_host(&mut config, SOCKET_DIRECTORY),
                None => add_host(&mut config, "localhost"),
            }
        }
        if config.get_ports().is_empty()
            && let Some(ports) = env.get("PGPORT")
        {
            for p in ports.split(',') {
                config.port(p.trim().parse().map_err(|_| "PGPORT is not a port number (1-65535)".to_string())?);
            }
        }
        if config.get_user().is_none() {
            let user = env
                .get("PGUSER")
                .or_else(|| env.get("USER"))
                .ok_or("no user: name one in --database-url (user@host, or user=…) or in PGUSER".to_string())?;
            config.user(user);
        }
        if config.get_dbname().is_none() {
            let db = env.get("PGDATABASE").unwrap_or_else(|| config.get_user().unwrap_or_default().to_owned());
            config.dbname(db);
        }
        if config.get_password().is_none() {
            if let Some(pw) = env.get("PGPASSWORD") {
                config.password(pw);
            } else if let Some(pw) = password_file(&config, env) {
                config.password(pw);
            }
        }
        if config.get_application_name().is_none()
            && let Some(name) = env.get("PGAPPNAME")
        {
            config.application_name(name);
        }

        let root_cert = match given("sslrootcert").or_else(|| env.get("PGSSLROOTCERT")) {
            Some(s) if s == "system" => Some(RootCert::System),
            Some(s) => Some(RootCert::File(PathBuf::from(s))),
            None => env.dot_postgresql("root.crt").map(RootCert::File),
        };
        let mode = match (given("sslmode"), env.get("PGSSLMODE")) {
            (Some(m), _) => Some(SslMode::parse(&m, "--database-url")?),
            (None, Some(m)) => Some(SslMode::parse(&m, "PGSSLMODE")?),
            (None, None) => None,
        };
        let mode = match (&root_cert, mode) {
            (Some(RootCert::System), None) => SslMode::VerifyFull,
            (Some(RootCert::System), Some(m)) if m != SslMode::VerifyFull && m != SslMode::Disable => {
                return Err(format!(
                    "sslmode={} may not be used with sslrootcert=system: the platform's roots vouch for names, so use verify-full",
                    m.name()
                ));
            }
            (_, Some(m)) => m,
            (_, None) => SslMode::Prefer,
        };
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(format!(
                "sslmode={} needs the CA that signed the server's certificate: set sslrootcert (a PEM file, or \"system\" \
                 for this machine's trusted roots), or put it in ~/.postgresql/root.crt",
                mode.name()
            ));
        }
        let cert = given("sslcert").or_else(|| env.get("PGSSLCERT")).map(PathBuf::from);
        let key = given("sslkey").or_else(|| env.get("PGSSLKEY")).map(PathBuf::from);
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (Some(c), None) => Some((c, env.home.clone().unwrap_or_default().join(".postgresql/postgresql.key"))),
            (None, key) => env
                .dot_postgresql("postgresql.crt")
                .map(|c| (c, key.unwrap_or_else(|| env.home.clone().unwrap_or_default().join(".postgresql/postgresql.key")))),
        };
        // libpq never uses TLS over a Unix socket.
        if config.get_hosts().iter().all(|h| matches!(h, Host::Unix(_))) && config.get_hostaddrs().is_empty() {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        Ok(DatabaseUrl { config, tls: TlsSettings { mode, root_cert, client_cert } })
    }
}

/// libpq's default socket directory on Debian and its derivatives.
const SOCKET_DIRECTORY: &str = "/var/run/postgresql";

fn add_host(config: &mut tokio_postgres::Config, host: &str) {
    let host = host.trim();
    if host.starts_with('/') {
        config.host_path(host);
    } else {
        config.host(host);
    }
}

/// Splits the TLS keys (percent-decoded from a URL's query, unquoted from `key=value`) from the
/// rest, which tokio-postgres reads.
fn split_tls_keys(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut tls = Vec::new();
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        let Some((base, query)) = s.split_once('?') else { return Ok((s.to_owned(), tls)) };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(k, "a parameter's name")?;
            if TLS_KEYS.contains(&key.as_str()) {
                tls.push((key, percent_decode(v, "a parameter's value")?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        return Ok((rest, tls));
    }
    let mut kept = String::new();
    for (key, value) in key_values(s)? {
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, value));
        } else {
            kept.push_str(&format!("{key}='{}' ", value.replace('\\', "\\\\").replace('\'', "\\'")));
        }
    }
    Ok((kept, tls))
}

/// libpq's `key = value` pairs: values bare (up to whitespace) or in single quotes, with `\`
/// escaping the next character in both.
fn key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let n = pairs.len() + 1;
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("not a PostgreSQL connection string (word {n} is not key=value)"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or_else(|| unterminated(&key))?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(unterminated(&key)),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or_else(|| unterminated(&key))?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn unterminated(key: &str) -> String {
    let key = if TLS_KEYS.contains(&key) || key.chars().all(|c| c.is_ascii_lowercase() || c == '_') { key } else { "?" };
    format!("not a PostgreSQL connection string (the value of {key} is not terminated)")
}

fn percent_decode(s: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("not a PostgreSQL connection string ({what} is not UTF-8 once percent-decoded)"))
}

/// The password for the first host from the password file, as libpq reads it
/// ([libpq: the password file](https://www.postgresql.org/docs/current/libpq-pgpass.html)):
/// `hostname:port:database:username:password` lines, `*` matching anything, `\` escaping `:`
/// and `\`; a file that group or others may read is ignored, as libpq does.
fn password_file(config: &tokio_postgres::Config, env: &Surroundings) -> Option<String> {
    let path = env.get("PGPASSFILE").map(PathBuf::from).or_else(|| env.home.as_ref().map(|h| h.join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the password file is ignored: group or others may read it (chmod 0600)");
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match (config.get_hosts().first(), config.get_hostaddrs().first()) {
        (Some(Host::Tcp(h)), _) => h.clone(),
        (Some(Host::Unix(_)), _) => "localhost".into(),
        (None, Some(a)) => a.to_string(),
        (None, None) => return None,
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let wanted = [host.as_str(), port.as_str(), config.get_dbname().unwrap_or(""), config.get_user().unwrap_or("")];
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let fields = pgpass_fields(line);
        (fields.len() == 5 && fields[..4].iter().zip(wanted).all(|(f, w)| f == "*" || f == w)).then(|| fields[4].clone())
    })
}

fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().unwrap().extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DatabaseUrl::resolve(s, &Surroundings::process())
    }
}

/// Parses `--database-url` without clap's usual error, which repeats the value (and with it
/// the password).
#[derive(Clone)]
pub(super) struct DatabaseUrlParser;

impl clap::builder::TypedValueParser for DatabaseUrlParser {
    type Value = DatabaseUrl;

    fn parse_ref(&self, cmd: &clap::Command, _: Option<&clap::Arg>, value: &std::ffi::OsStr) -> Result<DatabaseUrl, clap::Error> {
        let refuse = |why: &str| {
            let msg = format!(
                "invalid value for --database-url (DATABASE_URL): {why} (the value is not shown: it may hold a password)\n"
            );
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, msg).with_cmd(cmd)
        };
        value.to_str().ok_or_else(|| refuse("not UTF-8"))?.parse().map_err(|e: String| refuse(&e))
    }
}

/// `user@host:port/dbname`, for logs and errors.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let host = match (c.get_hosts().first(), c.get_hostaddrs().first()) {
            (Some(Host::Tcp(h)), _) => h.clone(),
            (Some(Host::Unix(p)), _) => p.display().to_string(),
            (None, Some(a)) => a.to_string(),
            (None, None) => String::new(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        write!(f, "{}@{host}:{port}/{}", c.get_user().unwrap_or("?"), c.get_dbname().unwrap_or("?"))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self}, sslmode={})", self.tls.mode.name())
    }
}

#[cfg(test)]
#[path = "database_tests.rs"]
mod tests;
