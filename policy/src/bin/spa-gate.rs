//! `spa-gate`: the SPA listener alone, for tests and for trying the gate by hand.
//!
//! ```text
//! spa-gate --listen ADDR:PORT --secret FILE [--node-key FILE] [--table NAME]
//!          [--ttl SECS] [--window SECS] [--rate COUNT/SECS] [--replay FILE] [--nat]
//!          [--debug]
//! ```
//!
//! Installs (or replaces) the pinhole table, then listens for knocks and logs to stderr.
//! SIGTERM or SIGINT log the gatekeeper's counts and end it; the table stays, so the IKE
//! ports stay dark (remove it with `nft delete table inet NAME`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use policy::gate::SpaGate;
use policy::spa::{GateConfig, Gatekeeper, SpaKeys};
use policy::{PinholeConfig, Pinholes};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

const USAGE: &str = "usage: spa-gate --listen ADDR:PORT --secret FILE [--node-key FILE] [--table NAME] \
                     [--ttl SECS] [--window SECS] [--rate COUNT/SECS] [--replay FILE] [--nat] [--debug]";

struct Args {
    listen: SocketAddr,
    secret: PathBuf,
    node_key: Option<PathBuf>,
    table: String,
    ttl: Duration,
    gate: GateConfig,
    debug: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut secret, mut node_key) = (None, None, None);
    let mut table = policy::nft::DEFAULT_TABLE.to_owned();
    let mut ttl = policy::nft::DEFAULT_TTL;
    let mut gate = GateConfig::default();
    let mut debug = false;
    let secs = |v: String| -> Result<Duration, String> {
        v.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{v:?} is not a number of seconds"))
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = Some(v.parse().map_err(|_| format!("{v:?} is not ADDR:PORT"))?);
            }
            "--secret" => secret = Some(PathBuf::from(value()?)),
            "--node-key" => node_key = Some(PathBuf::from(value()?)),
            "--table" => table = value()?,
            "--ttl" => ttl = secs(value()?)?,
            "--window" => gate.window = secs(value()?)?,
            "--rate" => {
                let v = value()?;
                let parsed = v.split_once('/').and_then(|(n, s)| {
                    Some((n.parse().ok()?, Duration::from_secs(s.parse().ok()?)))
                });
                gate.per_source_rate = parsed.ok_or_else(|| format!("{v:?} is not COUNT/SECS"))?;
            }
            "--replay" => gate.replay_path = Some(PathBuf::from(value()?)),
            "--nat" => gate.nat = true,
            "--debug" => debug = true,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        secret: secret.ok_or("--secret is required")?,
        node_key,
        table,
        ttl,
        gate,
        debug,
    })
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("spa-gate: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Plain text whatever features another crate turns on for tracing-subscriber: the
    // lines are read by people and by the tests.
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .with_max_level(if args.debug { tracing::Level::DEBUG } else { tracing::Level::INFO })
        .init();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("spa-gate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let keys = match &args.node_key {
        None => SpaKeys::load(&args.secret)?,
        Some(node) => SpaKeys::load_with_node_key(&args.secret, node)?,
    };
    let gatekeeper = Gatekeeper::new(keys, args.gate)?;
    let pinholes = Pinholes::new(PinholeConfig { table: args.table, ..PinholeConfig::default() })?;
    pinholes.install()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut gate = SpaGate::bind(args.listen, gatekeeper, pinholes, args.ttl).await?;
        let (mut term, mut int) =
            (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
        tokio::select! {
            result = gate.run() => result?,
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let s = gate.stats();
        info!(
            admitted = s.admitted,
            rejected = s.rejected,
            rate_limited = s.rate_limited,
            sources = s.sources,
            replay_entries = s.replay_entries,
            "spa-gate stopping; the pinhole table stays (the IKE ports stay dark)"
        );
        Ok(())
    })
}
