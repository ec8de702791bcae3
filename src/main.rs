//! The `asynq-guard` command line: `serve`, `check`, `hash-secret` and
//! `sign-existing`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "asynq-guard",
    version,
    about = "A security proxy between asynq programs and Redis"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short, default_value = "config/asynq-guard.toml")]
        config: PathBuf,
        /// Log format on standard error.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a configuration file and exit: 0 if it is usable.
    Check {
        /// Configuration file (TOML).
        #[arg(required_unless_present = "config_flag")]
        config: Option<PathBuf>,
        /// The same, as `serve` takes it.
        #[arg(long = "config", short = 'c', conflicts_with = "config")]
        config_flag: Option<PathBuf>,
    },
    /// Read a secret on standard input and print the SHA-256 to put in an
    /// identity's `secret_sha256` (one trailing newline is not part of it).
    HashSecret,
    /// Sign, in place in the upstream Redis, the unsigned tasks of every
    /// queue whose integrity mode is add or check (run it when turning
    /// integrity on over queues that already hold tasks).
    SignExisting {
        /// Configuration file (TOML), as `serve` takes it.
        #[arg(long, short, default_value = "config/asynq-guard.toml")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("ASYNQ_GUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

fn check(config: PathBuf) -> ExitCode {
    match asynq_guard::config::load(&config) {
        Ok(settings) => {
            for w in &settings.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: ok", config.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let messages = e.messages();
            for m in &messages {
                eprintln!("{m}");
            }
            let n = messages.len();
            eprintln!(
                "error: {}: {n} problem{}; the configuration is not usable",
                config.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::from(2)
        }
    }
}

fn hash_secret() -> ExitCode {
    use std::io::Read;
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("error: cannot read standard input: {e}");
        return ExitCode::FAILURE;
    }
    if input.ends_with(b"\n") {
        input.pop();
        if input.ends_with(b"\r") {
            input.pop();
        }
    }
    if input.is_empty() {
        eprintln!("error: the secret is empty");
        return ExitCode::FAILURE;
    }
    println!("{}", asynq_guard::auth::hash_secret(&input));
    ExitCode::SUCCESS
}

fn sign_existing(config: PathBuf) -> ExitCode {
    let settings = match asynq_guard::config::load(&config) {
        Ok(s) => s,
        Err(e) => {
            for m in e.messages() {
                eprintln!("{m}");
            }
            return ExitCode::from(2);
        }
    };
    if !settings.integrity.active() {
        eprintln!(
            "{}: no queue is in integrity mode add or check; nothing to sign",
            config.display()
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let control = asynq_guard::control::Control::new(settings.upstream.clone());
    let result = runtime.block_on(asynq_guard::integrity::rollout::sign_existing(
        &settings.integrity,
        &control,
    ));
    match result {
        Ok(reports) => {
            if reports.is_empty() {
                println!("no queue in asynq:queues is in integrity mode add or check");
            }
            for (queue, r) in &reports {
                let failing: Vec<String> =
                    r.failing.iter().map(|(k, v)| format!("{k} {v}")).collect();
                println!(
                    "queue {queue:?}: signed {}, already signed {}, changed while reading {}, failing their check {}{}",
                    r.signed,
                    r.valid,
                    r.changed,
                    r.failing.values().sum::<u64>(),
                    if failing.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", failing.join(", "))
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::HashSecret => hash_secret(),
        Cmd::SignExisting { config } => sign_existing(config),
        Cmd::Check {
            config,
            config_flag,
        } => check(config.or(config_flag).unwrap_or_default()),
        Cmd::Serve { config, log_format } => {
            init_logging(log_format);
            let settings = match asynq_guard::config::load(&config) {
                Ok(s) => {
                    for w in &s.warnings {
                        tracing::warn!("{w}");
                    }
                    s
                }
                Err(e) => {
                    // One event per problem, each the line `check` prints.
                    for m in e.messages() {
                        tracing::error!("invalid configuration: {m}");
                    }
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(asynq_guard::app::run(settings, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
