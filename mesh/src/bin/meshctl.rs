//! `meshctl`: the ikemesh command-line client. Everything is in `mesh::ctl`.

use clap::Parser as _;
use mesh::cli::MeshctlArgs;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's), --help and --version with 0.
    mesh::ctl::run(&MeshctlArgs::parse())
}
