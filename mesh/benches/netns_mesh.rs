//! N `meshd`s in network namespaces on one bridge, started at once with the default
//! settings (SPA on, IKE only where the kernel has no ESP): how long until every IKE
//! SA is up, and how many ends are up along the way. Run as root:
//!
//! ```text
//! cargo bench -p mesh --bench netns_mesh               # 10, 30, 60 and 100 nodes
//! cargo bench -p mesh --bench netns_mesh -- 60 --max 120
//! cargo bench -p mesh --bench netns_mesh -- --smoke    # 4 nodes
//! ```
//!
//! Traffic stays inside the namespaces this run creates. A figure, not a test: it
//! prints what it saw and fails only when the mesh cannot be set up.

#![allow(clippy::print_stdout, missing_docs)] // a benchmark prints its figures

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Mesh, Options};
use std::time::{Duration, Instant};

/// Established IKE SAs over all nodes' views (each pair counts twice: both ends).
fn ends_up(mesh: &Mesh, n: usize) -> usize {
    (0..n)
        .filter_map(|i| mesh.try_status(i))
        .map(|s| s.peers.iter().filter(|p| p.ike == "established").count())
        .sum()
}

fn run(n: usize, max: Duration) {
    let options = Options { ike: String::new(), ..Options::default() };
    let mut mesh = Mesh::new(n, options);
    let started = Instant::now();
    for i in 0..n {
        mesh.spawn(i);
    }
    let want = n * (n - 1);
    let mut line = Vec::new();
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let up = ends_up(&mesh, n);
        let t = started.elapsed();
        if up != last {
            line.push(format!("{:.1} s: {up}", t.as_secs_f64()));
            last = up;
        }
        if up == want {
            println!("{n} nodes: {up} / {want} ends up in {:.1} s", t.as_secs_f64());
            break;
        }
        if t > max {
            println!(
                "{n} nodes: {up} / {want} ends up, not converged after {:.0} s",
                max.as_secs_f64()
            );
            break;
        }
    }
    let warnings: usize = (0..n).map(|i| mesh.log(i).matches("did not answer").count()).sum();
    println!("  progress: {}", line.join(", "));
    println!("  \"did not answer\" warnings: {warnings}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let max = args
        .iter()
        .position(|a| a == "--max")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(120), Duration::from_secs);
    let sizes: Vec<usize> = if args.iter().any(|a| a == "--smoke") {
        vec![4]
    } else {
        let given: Vec<usize> = args
            .iter()
            .enumerate()
            .filter(|(i, _)| *i == 0 || args[i - 1] != "--max")
            .filter_map(|(_, a)| a.parse().ok())
            .collect();
        if given.is_empty() { vec![10, 30, 60, 100] } else { given }
    };
    for n in sizes {
        run(n, max);
    }
}
