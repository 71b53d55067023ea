//! `meshd`: the ikemesh daemon.

use clap::Parser;
use mesh::cli::MeshdArgs;
use mesh::config::{Config, LogFormat};
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let args = MeshdArgs::parse();
    if args.flush {
        // The socket a running daemon would answer on: the configuration's, when it
        // loads; else the default.
        let socket = Config::load(&args.config).map_or_else(
            |_| std::path::PathBuf::from(mesh::cli::DEFAULT_SOCKET),
            |cfg| cfg.daemon.control_socket,
        );
        return match mesh::daemon::flush_kernel(&socket) {
            Ok(done) => {
                eprintln!("meshd: {done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meshd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match Config::load(&args.config) {
        Ok(cfg) => cfg,
        Err(problems) => {
            for p in &problems {
                eprintln!("meshd: {p}");
            }
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        eprintln!("meshd: {}: configuration is good", args.config.display());
        return ExitCode::SUCCESS;
    }
    init_logging(&args.log_level, cfg.daemon.log_format);
    match mesh::daemon::run(cfg, &args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("meshd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to the journal, with priorities and fields, when systemd connected our
/// stdout to it (it says so in `JOURNAL_STREAM`); otherwise to stdout, as text or JSON
/// lines (BOSH's bpm, a terminal, a test).
fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journal) => {
                // INFO is journald's "informational" (6), as other daemons log it; the
                // crate's default would make every INFO line a "notice" (5).
                let mut priorities = tracing_journald::PriorityMappings::new();
                priorities.info = tracing_journald::Priority::Informational;
                priorities.debug = tracing_journald::Priority::Debug;
                let journal = journal
                    .with_syslog_identifier("meshd".to_owned())
                    .with_priority_mappings(priorities);
                tracing_subscriber::registry().with(filter).with(journal).init();
                return;
            }
            Err(e) => eprintln!("meshd: cannot log to the journal ({e}); logging to stdout"),
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}
