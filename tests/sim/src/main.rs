//! `ikemesh-sim`: runs the fleet simulator from the command line, for runs too long
//! for the test suite (a 1,000-node mesh) and to replay a failing seed.
//!
//! ```text
//! cargo run --release -p ikemesh-sim -- converge --nodes 1000 --seed 1
//! ```

#![allow(clippy::print_stdout)] // a command-line tool: its figures go to standard output

use clap::Parser;
use ikemesh_sim::{Options, Sim};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Runs a simulated mesh until every pair is up, and prints the figures.
#[derive(Debug, Parser)]
#[command(name = "ikemesh-sim", version)]
enum Cli {
    /// Starts every node at once and runs until every pair has one IKE SA and one
    /// child SA at both ends.
    Converge {
        /// Nodes in the mesh.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many seeds, from the first.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// Share of datagrams lost (0.01 is 1%).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Share of datagrams reordered.
        #[arg(long, default_value_t = 0.0)]
        reorder: f64,
        /// Share of datagrams duplicated.
        #[arg(long, default_value_t = 0.0)]
        duplicate: f64,
        /// SPA: IKE ports closed until a knock.
        #[arg(long)]
        spa: bool,
        /// Give up after this much virtual time, in seconds.
        #[arg(long, default_value_t = 600)]
        max: u64,
    },
}

fn main() -> ExitCode {
    let Cli::Converge { nodes, seed, seeds, loss, reorder, duplicate, spa, max } = Cli::parse();
    let mut failed = false;
    for seed in seed..seed + seeds {
        let mut opts = Options::new(nodes, seed);
        opts.loss = loss;
        opts.reorder = reorder;
        opts.duplicate = duplicate;
        opts.spa = spa;
        let wall = Instant::now();
        let mut sim = Sim::new(opts);
        let setup = wall.elapsed();
        sim.start_all();
        let took = sim.run_until_converged(Duration::from_secs(max), Duration::from_millis(250));
        let wall = wall.elapsed();
        if let Some(t) = took {
            println!(
                "converged: {} pairs in {:.2} s virtual, {:.1} s wall ({:.1} s of it making certificates); {}",
                nodes * nodes.saturating_sub(1) / 2,
                t.as_secs_f64(),
                wall.as_secs_f64(),
                setup.as_secs_f64(),
                sim.summary()
            );
        } else {
            failed = true;
            println!(
                "NOT converged after {max} s virtual ({:.1} s wall); {}",
                wall.as_secs_f64(),
                sim.summary()
            );
            for p in sim.problems(10) {
                println!("  {p}");
            }
            println!(
                "replay: cargo run --release -p ikemesh-sim -- converge --nodes {nodes} --seed {seed} --loss {loss} --reorder {reorder} --duplicate {duplicate}{} --max {max}",
                if spa { " --spa" } else { "" }
            );
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
