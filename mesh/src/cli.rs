//! Command-line definitions shared by the binaries, their man pages and completions.

use clap::Parser;

/// `meshd`: the ikemesh daemon, one per node.
#[derive(Debug, Parser)]
#[command(name = "meshd", version, about = "The ikemesh IPsec mesh daemon")]
pub struct MeshdArgs {}

/// `meshctl`: inspect and steer a running `meshd`.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about = "Control the ikemesh daemon")]
pub struct MeshctlArgs {}
