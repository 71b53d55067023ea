//! The ikemesh test bed: real kernels, real namespaces, real packets.
//!
//! - [`netns`]: hosts that are Linux network namespaces, wired by veth pairs (two hosts)
//!   or a bridge (more), each with an IPv4 and an IPv6 address; commands and Rust
//!   closures run inside a host. Names are unique per process, everything is torn down
//!   on drop (panics included), and namespaces left by a killed run are removed at the
//!   next start.
//! - [`capture`]: tcpdump on a host's link, read back as parsed frames.
//! - [`vm`]: a stock Debian kernel (which has ESP, unlike the build hosts') under QEMU,
//!   booted once per test binary, running test bodies inside it with the host's root
//!   file system visible, and reporting the guest's real exit status.
//!
//! Tests using this crate need root (CI runs as root).

pub mod capture;
pub mod netns;
pub mod vm;

pub use capture::{Capture, Frame};
pub use netns::{Host, Net, Proc};

use std::io;

/// An `io::Error` carrying a one-line message.
pub(crate) fn error(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}
