use clap::Parser;

fn main() -> std::process::ExitCode {
    aurore::app::main(aurore::config::Cli::parse())
}
