//! The mesh PKI of ikemesh.
//!
//! A mesh has its own certificate authority. This crate creates it (Ed25519 by default),
//! issues short-lived node certificates from certificate signing requests so that a
//! node's private key never leaves the node, verifies a peer's certificate chain against
//! the trust bundle (two CAs during a rotation), the expected identity and the CRL,
//! revokes nodes by name, serial or public key, rotates the CA without downtime, and
//! serves enrollment over mutual TLS with one-time join tokens. Its verifier implements
//! the certificate-check trait of the `ike` crate.
//!
//! Private keys are written with mode 0600, zeroized in memory, and never appear in logs
//! or `Debug` output.
