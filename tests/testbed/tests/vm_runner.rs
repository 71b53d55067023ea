//! The VM runner's one-shot mode: a VM of its own for one command, whose exit status
//! and output come back to the host as the guest command's own.

use ikemesh_testbed::vm;
use std::process::Command;
use std::time::Duration;

#[test]
fn one_shot_run_returns_the_guest_commands_status_and_output() {
    let out = vm::run_once(
        &["sh", "-c", "uname -r; echo to-stderr >&2; exit 3"],
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(out.status, 3, "a failing guest command fails on the host\n{out:?}");
    assert!(out.stderr.contains("to-stderr"), "{out:?}");
    // It ran on Debian's kernel, not on the host's.
    let guest_kernel = out.stdout.lines().next().unwrap_or_default().to_owned();
    let host_kernel =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let cached = std::fs::read_to_string("/var/cache/ikemesh-vm/release").unwrap_or_default();
    assert_eq!(guest_kernel, cached.trim(), "{out:?}");
    assert_ne!(guest_kernel, host_kernel.trim());
    println!(
        "one-shot VM: guest kernel {guest_kernel}, guest exit status {} reported on the host",
        out.status
    );
}
