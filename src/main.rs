use clap::Parser;
use clap::error::ErrorKind;

fn main() -> std::process::ExitCode {
    match aurore::config::Cli::try_parse() {
        Ok(cli) => aurore::app::main(cli),
        // --help, --version, and the help of `aurore` alone (exit 2).
        Err(e) if !e.use_stderr() || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            std::process::ExitCode::from(e.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("aurore: invalid configuration: {}", aurore::config::usage_error(&e));
            std::process::ExitCode::from(2)
        }
    }
}
