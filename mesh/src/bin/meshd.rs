//! `meshd`: the ikemesh daemon.

use clap::Parser;
use mesh::cli::MeshdArgs;
use std::process::ExitCode;

fn main() -> ExitCode {
    let _args = MeshdArgs::parse();
    // The daemon is built in the [mesh] issue; until then this binary says so rather
    // than pretending to run a mesh.
    eprintln!("meshd: the daemon is not built yet; only --help and --version work");
    ExitCode::from(2)
}
