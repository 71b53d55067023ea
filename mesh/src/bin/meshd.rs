//! `meshd`: the ikemesh daemon.

use clap::Parser;
use mesh::cli::MeshdArgs;
use mesh::config::{Config, LogFormat};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = MeshdArgs::parse();
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    match cfg.daemon.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    match mesh::daemon::run(cfg, &args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("meshd: {e}");
            ExitCode::FAILURE
        }
    }
}
