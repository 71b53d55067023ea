//! `meshctl`: the ikemesh command-line client.

use clap::Parser;
use mesh::cli::MeshctlArgs;
use std::process::ExitCode;

fn main() -> ExitCode {
    let _args = MeshctlArgs::parse();
    // The control API arrives with the daemon in the [mesh] issue.
    eprintln!("meshctl: no commands yet: the control API arrives with the daemon");
    ExitCode::from(2)
}
