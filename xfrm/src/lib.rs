//! The kernel boundary of ikemesh: the XFRM framework over netlink.
//!
//! Nothing else in ikemesh talks to `NETLINK_XFRM`. This crate installs, updates,
//! reads and deletes ESP security associations (SAD) and policies (SPD), switches a
//! policy's level between `use` (encrypt where an SA exists) and `require` (drop
//! plaintext) in place, turns the kernel's ACQUIRE, EXPIRE, SA and POLICY multicast
//! messages into a typed event stream, and probes what the kernel can do, so that a
//! kernel without ESP is reported in one clear line rather than as
//! `Requested type not found`.
//!
//! Everything ikemesh installs is marked as its own, so flushing and start-up
//! reconciliation never touch entries that an operator or another daemon put there.
//!
//! Unsafe code is denied here as everywhere else, except in the one module that needs
//! raw socket options, where every block carries a `// SAFETY:` comment.
