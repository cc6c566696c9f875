//! The verbs of the command line.

mod maintain;
mod recover;
mod relay;
mod serve;
mod tail;
mod upload;

use serve::shutdown_signal;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the verb the command line names; the exit code says how it went.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(&args).await,
        Command::Migrate(args) => maintain::migrate(&args).await,
        Command::Replay(args) if args.verify => maintain::verify_views(&args.instance).await,
        Command::Replay(args) if args.from_snapshot => maintain::replay_from_snapshot(&args.instance).await,
        Command::Replay(args) => maintain::replay(&args.instance).await,
        Command::Snapshot(args) => maintain::snapshot(&args).await,
        Command::Archive(args) => recover::archive(&args).await,
        Command::Restore(args) => recover::restore(&args).await,
        Command::Verify(args) => maintain::verify(&args).await,
        Command::Upload(args) => upload::run(&args).await,
        Command::Tail(args) => tail::run(&args).await,
        Command::Relay(args) => relay::run(&args).await,
        Command::Gc(args) => maintain::gc(&args).await,
        Command::Completions(args) => completions(args.shell),
        Command::Man => man(),
    }
}

/// Logs to standard error, at `info` unless `filter` (or `RUST_LOG`) says otherwise.
pub fn init_tracing(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colour only for a person at a terminal, and never with `NO_COLOR` set (https://no-color.org).
    use std::io::IsTerminal as _;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).try_init();
}

/// Writes the completion script for `shell` to standard output.
fn completions(shell: crate::cli::Shell) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory as _;
    use clap_complete::Shell as Target;
    let target = match shell {
        crate::cli::Shell::Bash => Target::Bash,
        crate::cli::Shell::Zsh => Target::Zsh,
        crate::cli::Shell::Fish => Target::Fish,
    };
    clap_complete::generate(target, &mut Cli::command(), "artifactstore", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes the manual page, made from the same definitions as `--help`, to standard output.
fn man() -> anyhow::Result<ExitCode> {
    use clap::CommandFactory as _;
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(ExitCode::SUCCESS)
}
