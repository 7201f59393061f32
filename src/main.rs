//! The `keywheel` binary: `serve` runs the watchdog HTTP server, `demo`
//! runs it end to end on loopback.
//!
//! Exit codes: 0 on success (a drained shutdown included), 1 when serving
//! or the demo fails, 2 for invalid flags, environment variables or config
//! file, and 130 when a second signal cuts the drain short.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keywheel::demo::DemoArgs;
use keywheel::server::{init_logging, LogFormat, ServeArgs, ServeConfig, Server};
use tracing_subscriber::filter::LevelFilter;

/// Millions of keyed periodic workers: a sharded timer wheel, a slab and a worker pool.
#[derive(Debug, Parser)]
#[command(name = "keywheel", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the watchdog HTTP server for expected callbacks.
    Serve(Box<ServeArgs>),
    /// Run the watchdog end to end on loopback and check its alerts.
    Demo(DemoArgs),
    /// Measure memory per key and the perform rates this machine sustains.
    Bench(keywheel::sizing::BenchArgs),
}

/// Exit code for invalid settings, as clap uses for invalid flags.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Demo(args) => demo(args),
        Command::Bench(args) => match run_async(keywheel::sizing::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let resolved = match args.resolve() {
        Ok(resolved) => resolved,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    if let Err(error) = init_logging(resolved.log_format, LevelFilter::INFO) {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }

    match run_async(serve_until_signal(resolved.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "keywheel serve failed");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: DemoArgs) -> ExitCode {
    // Errors only by default (RUST_LOG overrides): the demo prints its own
    // progress bars and summary, and the server's overdue warnings, one a
    // second by design, would break the bars.
    if let Err(error) = init_logging(LogFormat::Text, LevelFilter::ERROR) {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    match run_async(keywheel::demo::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `task` on a multi-threaded tokio runtime.
fn run_async(task: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?
        .block_on(task)
}

async fn serve_until_signal(config: ServeConfig) -> anyhow::Result<()> {
    // The signal handlers go in before the server logs its start, so a
    // SIGTERM sent right after that line drains instead of killing.
    let shutdown = shutdown_signal().context("failed to install the signal handlers")?;
    let server = Server::bind(config).await?;
    server.run(shutdown).await
}

/// Installs the SIGTERM and SIGINT (Ctrl-C) handlers and returns a future
/// that resolves on the first of them. A second signal exits at once,
/// without waiting for the drain.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let first = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = first,
            "signal received, draining (a second signal stops without draining)"
        );

        tokio::spawn(async move {
            let second = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::warn!(
                signal = second,
                "second signal received, exiting without draining"
            );
            std::process::exit(130);
        });
    })
}

/// Returns a future that resolves on the first Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for Ctrl-C, so only a kill stops the server");
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C received, draining");
    })
}
