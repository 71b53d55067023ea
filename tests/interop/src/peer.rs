//! Drives the `ike-peer` binary (ikemesh's IKE over UDP) inside a namespaced host: its
//! stdout event lines are collected by a thread, commands go to its stdin.

use crate::error;
use crate::pki::Identity;
use ikemesh_testbed::Host;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How to start one `ike-peer`.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The `ike-peer` binary (`env!("CARGO_BIN_EXE_ike-peer")` in this crate's tests).
    pub bin: PathBuf,
    /// Our address.
    pub local: IpAddr,
    /// The peer's address.
    pub remote: IpAddr,
    /// Our certificate and key.
    pub identity: Identity,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The identity (FQDN) the peer must prove.
    pub peer_id: String,
    /// Start the IKE SA rather than wait for the peer.
    pub initiate: bool,
    /// Install child SAs and policies into the kernel (needs ESP: the VM).
    pub install: bool,
    /// D-H groups for IKE, by `ike-peer` name (`x25519`, `ecp256`, `modp2048`).
    pub groups: Vec<String>,
    /// More arguments, as given (e.g. `--spa-secret FILE`).
    pub extra: Vec<String>,
}

impl PeerOptions {
    /// `bin` as responder between `local` and `remote`, proving `identity` (under the
    /// CA `ca_pem`) to the peer `peer_id`: no kernel install, default groups. Set the
    /// other fields with struct update syntax.
    pub fn new(
        bin: PathBuf,
        identity: &Identity,
        ca_pem: &str,
        peer_id: &str,
        (local, remote): (IpAddr, IpAddr),
    ) -> Self {
        Self {
            bin,
            local,
            remote,
            identity: identity.clone(),
            ca_pem: ca_pem.to_owned(),
            peer_id: peer_id.to_owned(),
            initiate: false,
            install: false,
            groups: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// A running `ike-peer`.
pub struct IkePeer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for IkePeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkePeer").field("pid", &self.child.id()).finish_non_exhaustive()
    }
}

fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

impl IkePeer {
    /// Writes the credentials into a private folder, starts `ike-peer` in `host`, and
    /// waits until it listens.
    pub fn start(host: &Host, opts: &PeerOptions) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ikemesh-peer.").tempdir()?;
        let (cert, key, ca) =
            (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
        fs::write(&cert, &opts.identity.cert_pem)?;
        write_private(&key, &opts.identity.key_pem)?;
        fs::write(&ca, &opts.ca_pem)?;
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut cmd = host.command(&path(&opts.bin));
        cmd.args(["--local", &opts.local.to_string(), "--remote", &opts.remote.to_string()])
            .args(["--cert", &path(&cert), "--key", &path(&key), "--ca", &path(&ca)])
            .args(["--peer-id", &opts.peer_id]);
        for g in &opts.groups {
            cmd.args(["--group", g]);
        }
        if opts.initiate {
            cmd.arg("--initiate");
        }
        if opts.install {
            cmd.arg("--install");
        }
        cmd.args(&opts.extra);
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| error("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| error("no stdout"))?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = IkePeer { child, stdin, lines, seen: Vec::new(), _dir: dir };
        peer.expect("ready", Duration::from_secs(10))?;
        Ok(peer)
    }

    /// Waits for the next line that starts with `prefix` (lines before it are kept in
    /// [`IkePeer::seen`]); a line starting with `failed` ends the wait with an error.
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> io::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return Ok(line);
                    }
                    if line.starts_with("failed") && !prefix.starts_with("failed") {
                        return Err(error(format!("waiting for {prefix:?}, ike-peer: {line}")));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(error(format!(
                        "no {prefix:?} line from ike-peer within {timeout:?}; it said: {:?}",
                        self.seen
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(error(format!(
                        "ike-peer exited while waiting for {prefix:?}; it said: {:?}",
                        self.seen
                    )));
                }
            }
        }
    }

    /// Sends a command and waits for its `ok` (an `error` answer is an error).
    pub fn command(&mut self, cmd: &str) -> io::Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|e| error(format!("no answer to {cmd:?} ({e}); saw {:?}", self.seen)))?;
            self.seen.push(line.clone());
            if line == format!("ok {cmd}") {
                return Ok(());
            }
            if line.starts_with(&format!("error {cmd}")) {
                return Err(error(format!("ike-peer refused {cmd:?}: {line}")));
            }
        }
    }

    /// Every line seen so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The value of `key=` in an event line (`child-up in=0x… out=0x…`).
    pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
        line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    /// An SPI field (`0x…`) of an event line.
    pub fn spi(line: &str, key: &str) -> Option<u32> {
        u32::from_str_radix(Self::field(line, key)?.trim_start_matches("0x"), 16).ok()
    }

    /// Asks it to quit and waits (killing it after 5 s).
    pub fn quit(mut self) -> io::Result<Vec<String>> {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        Ok(std::mem::take(&mut self.seen))
    }
}

impl Drop for IkePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
