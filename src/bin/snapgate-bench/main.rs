//! `snapgate-bench`: the load harness and the scale check.
//!
//! `load` registers terminals with real DUKPT-encrypted secrets, then drives AuthorizeAndCapture
//! transactions (and a registration mix) over keep-alive connections, after measuring a plain
//! hyper baseline that answers the same bytes. `scale` bulk-writes terminal records through the
//! store API and reports bytes on disk per terminal, RSS and restart time.
//! See docs/BENCHMARKS.md for how to run both and what they measured.

mod baseline;
mod client;
mod connector;
mod fleet;
mod load;
mod pairing;
mod plot;
mod report;
mod scale;
mod sys;

use clap::{Parser, Subcommand};

// The same allocator as `snapgate serve`, so the in-process server measures the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "snapgate-bench",
    about = "Load harness and scale check for snapgate (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant (`load`'s many flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Register terminals, then measure a plain hyper baseline and snapgate on the same
    /// connections and request bodies.
    Load(load::LoadArgs),
    /// POS pairings over TLS: a burst without and with the key pool, then a fixed rate with
    /// SOAP Pings beside it (docs/PAIRING.md, "Benchmark").
    Pairing(pairing::PairingArgs),
    /// Bulk-write terminal records through the store API; report bytes/terminal, RSS, restart.
    Scale(scale::ScaleArgs),
    /// The Cloud Connector: sessions (messages/s, round trip), idle devices (RSS per device)
    /// and a reconnect storm, against the server in a child process.
    Connector(connector::ConnectorArgs),
    /// (internal) The connector bench's server process.
    #[command(hide = true)]
    ConnectorServer {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// (internal) Reopen a scale database in a fresh process and print JSON measurements.
    #[command(hide = true)]
    ScaleReopen {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        sled: scale::SledVariant,
        /// Hex TerminalId to read after opening.
        #[arg(long)]
        probe: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load(args) => load::run(args),
        Command::Scale(args) => scale::run(args),
        Command::Pairing(args) => pairing::run(args),
        Command::Connector(args) => connector::run(args),
        Command::ConnectorServer { dir, threads } => connector::serve_child(&dir, threads),
        Command::ScaleReopen { dir, sled, probe } => scale::reopen_child(&dir, sled, &probe),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snapgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
