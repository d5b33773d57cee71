//! The logging flags (`--log-format`, `--log-level`) and how they resolve against `RUST_LOG`,
//! `NO_COLOR` and whether stderr is a terminal.

use clap::Args;

use super::ConfigError;

// How aurore logs, for every subcommand (the flags may stand before or after it). Taken as text
// and checked by `LogArgs::resolve`, so that a bad value is one line of ours (exit 2), like every
// other invalid setting, before anything is logged. (A plain comment: clap would take a doc
// comment of this flattened struct for `aurore --help`'s description.)
#[derive(Debug, Clone, Default, Args)]
pub struct LogArgs {
    /// Log line format on stderr: `text` (for people) or `json` (one JSON object a line, for
    /// log shippers). Default: text when stderr is a terminal, json otherwise.
    #[arg(long, global = true, env = "AURORE_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,

    /// Least severe level logged: error, warn, info, debug or trace. Default info. RUST_LOG,
    /// when set, wins (any tracing-subscriber EnvFilter directives; deadpool's own warnings stay
    /// off unless it names deadpool: aurore logs those events itself, in better words).
    #[arg(long, global = true, env = "AURORE_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// tracing-subscriber's human format; colours only on a terminal.
    Text,
    /// One JSON object a line: timestamp, level, target, message and every field as a JSON value.
    Json,
}

/// [`LogArgs`] resolved against the environment: what `logging::init` sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// EnvFilter directives: `RUST_LOG` when set, else built from `--log-level`.
    pub filter: String,
    /// The filter came from `RUST_LOG`.
    pub from_rust_log: bool,
    /// ANSI colours: text format, stderr a terminal and `NO_COLOR` unset.
    pub ansi: bool,
}

/// deadpool-postgres warns "Connection error: db error" and "Connection could not be recycled"
/// when a connection ends; `db` logs the same event itself, in the server's words and with the
/// host. Appended to every filter, `RUST_LOG`'s too unless it names deadpool.
const DEADPOOL_QUIET: &str = "deadpool=error";

/// The levels `--log-level` takes, most severe first.
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl LogArgs {
    /// Resolves the flags. `rust_log` and `no_color` are the variables' values (empty counts as
    /// unset), `stderr_terminal` whether stderr is a terminal: arguments, so this stays pure.
    pub fn resolve(
        &self,
        rust_log: Option<&str>,
        no_color: Option<&str>,
        stderr_terminal: bool,
    ) -> Result<LogSettings, ConfigError> {
        let format = match self.log_format.as_deref().map(str::trim) {
            None | Some("") => {
                if stderr_terminal {
                    LogFormat::Text
                } else {
                    LogFormat::Json
                }
            }
            Some(f) if f.eq_ignore_ascii_case("text") => LogFormat::Text,
            Some(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(f) => return Err(ConfigError(format!("--log-format (AURORE_LOG_FORMAT) must be text or json, got {f:?}"))),
        };
        let level = match self.log_level.as_deref().map(str::trim) {
            None | Some("") => "info".to_owned(),
            Some(l) => {
                let l = l.to_ascii_lowercase();
                if !LOG_LEVELS.contains(&l.as_str()) {
                    return Err(ConfigError(format!(
                        "--log-level (AURORE_LOG_LEVEL) must be one of {}, got {l:?}",
                        LOG_LEVELS.join(", ")
                    )));
                }
                l
            }
        };
        let ansi = format == LogFormat::Text && stderr_terminal && no_color.is_none_or(str::is_empty);
        if let Some(directives) = rust_log.map(str::trim).filter(|d| !d.is_empty()) {
            tracing_subscriber::EnvFilter::try_new(directives)
                .map_err(|e| ConfigError(format!("RUST_LOG={directives:?} is not a valid log filter: {e}")))?;
            let filter =
                if directives.contains("deadpool") { directives.to_owned() } else { format!("{directives},{DEADPOOL_QUIET}") };
            return Ok(LogSettings { format, filter, from_rust_log: true, ansi });
        }
        // librdkafka's own log stays at warn (its info and debug are chatty), unless the
        // chosen level is stricter still.
        let rdkafka = if level == "error" { "error" } else { "warn" };
        Ok(LogSettings {
            format,
            filter: format!("{level},librdkafka={rdkafka},rdkafka={rdkafka},{DEADPOOL_QUIET}"),
            from_rust_log: false,
            ansi,
        })
    }
}
