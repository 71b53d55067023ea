//! strongSwan's charon as a test peer, in a network-namespace host.
//!
//! ```no_run
//! use ikemesh_interop::{Charon, CharonConfig, Connection, KeyType, TestCa};
//! use ikemesh_testbed::Net;
//!
//! let net = Net::new(2)?;
//! let (a, b) = (net.host(0), net.host(1));
//! let ca = TestCa::new(KeyType::Ed25519)?;
//! let (ida, idb) = (ca.issue("a.ikemesh.test")?, ca.issue("b.ikemesh.test")?);
//! let conn_a = Connection::host_to_host("peer", a.addr(false), b.addr(false), &idb.id);
//! let conn_b = Connection::host_to_host("peer", b.addr(false), a.addr(false), &ida.id);
//! let ca_pem = ca.cert_pem().to_owned();
//! let charon_a = Charon::start(a, CharonConfig::new(ida, ca_pem.clone(), vec![conn_a]))?;
//! let charon_b = Charon::start(b, CharonConfig::new(idb, ca_pem, vec![conn_b]))?;
//! charon_a.initiate("peer")?;
//! let sas = charon_b.list_sas()?;
//! assert!(sas[0].is_established() && sas[0].installed_child("peer").is_some());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # What is private to each instance
//!
//! Everything lives in a temporary folder owned by the [`Charon`] and deleted when it
//! drops: `strongswan.conf` (handed to charon and swanctl through `STRONGSWAN_CONF`, so
//! nothing of `/etc/strongswan.*` is read), `swanctl/swanctl.conf` with the credential
//! folders beside it (swanctl looks for them next to the file given with `--file`), the
//! vici socket (`charon.plugins.vici.socket`), the log (`charon.filelog`), and charon's
//! PID file.
//!
//! `swanctl --load-all` loads the configuration; everything else (initiate, list,
//! rekey, terminate, counters) goes straight over the vici socket: in the VM's emulated
//! CPU a swanctl run costs over a second, and tests poll SA state often.
//! [`Charon::request`] sends any other vici request, [`Charon::swanctl`] runs any other
//! swanctl command against this instance.
//!
//! The PID file path is compiled into charon (`/var/run/charon.pid`, no option moves
//! it), and a second charon refuses to start while the first one's PID file names a
//! live process. So charon runs in a mount namespace of its own (`unshare --mount`, in
//! the host's network namespace) in which the instance's `run/` folder is bind-mounted
//! over `/run`: its PID file lands there, and any number of instances run at once,
//! one per host.
//!
//! The plugin list is explicit (`charon.load`), the same on every machine: the crypto
//! plugins for AES-GCM, SHA-2, X25519/Ed25519 (`curve25519`, and `openssl`, which also
//! does ECDSA and the NIST groups), the certificate plugins, `kernel-netlink`,
//! `socket-default`, `vici` and `counters` (for rekey counts). No `updown`, no
//! `stroke`, no `resolve`: nothing outside the namespace is touched.

use crate::error;
use crate::pki::{Identity, TOOL_PLUGINS, path_str};
use crate::sa::{self, ChildSa, IkeSa, Section};
use crate::vici::{self, Vici};
use ikemesh_testbed::Host;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The daemon, as Debian installs it.
pub const CHARON: &str = "/usr/lib/ipsec/charon";

/// IKE proposal: AES-256-GCM-16, PRF HMAC-SHA2-256, D-H with X25519 (group 31).
pub const IKE_AES256GCM_X25519: &str = "aes256gcm16-prfsha256-x25519";
/// IKE proposal: AES-256-GCM-16, PRF HMAC-SHA2-256, D-H with NIST P-256 (group 19).
pub const IKE_AES256GCM_ECP256: &str = "aes256gcm16-prfsha256-ecp256";
/// ESP proposal: AES-256-GCM-16 without extended sequence numbers.
pub const ESP_AES256GCM: &str = "aes256gcm16-noesn";
/// ESP proposal: AES-256-GCM-16 with extended sequence numbers.
pub const ESP_AES256GCM_ESN: &str = "aes256gcm16-esn";

/// Plugins charon loads (see the module documentation).
pub const CHARON_PLUGINS: &str = "random drbg nonce sha1 sha2 aes hmac kdf gcm pem pkcs1 pkcs8 \
     x509 constraints pubkey openssl curve25519 kernel-netlink socket-default vici counters";

/// A rekey time that never comes during a test: no rekeying unless a test asks.
pub const NO_REKEY: Duration = Duration::from_hours(24);

/// How long charon's commands and the waits after them may take. Generous: the VM
/// emulates its CPU in software.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long charon may take to start and open its vici socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The credential folders swanctl reads next to swanctl.conf (all created, so that it
/// does not complain about missing ones).
const SWANCTL_DIRS: &[&str] = &[
    "x509", "x509ca", "x509aa", "x509ac", "x509crl", "x509ocsp", "pubkey", "private", "rsa",
    "ecdsa", "bliss", "pkcs8", "pkcs12",
];

/// IPsec mode of a child SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Transport mode: protects traffic between the two IKE addresses.
    Transport,
    /// Tunnel mode.
    Tunnel,
}

/// One child SA configuration (`connections.<conn>.children.<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildConfig {
    /// Its name, which `initiate`, `rekey_child` and `terminate_child` take.
    pub name: String,
    /// Transport or tunnel.
    pub mode: Mode,
    /// ESP proposals, in order of preference, e.g. [`ESP_AES256GCM`].
    pub esp_proposals: Vec<String>,
    /// Local traffic selectors (`local_ts`); empty for `dynamic` (our own address).
    pub local_ts: Vec<String>,
    /// Remote traffic selectors (`remote_ts`); empty for `dynamic`.
    pub remote_ts: Vec<String>,
    /// When charon rekeys the child SA by itself: [`NO_REKEY`] unless a test wants it.
    pub rekey_time: Duration,
    /// `start_action`: `none` (wait for `initiate`), `trap` or `start`.
    pub start_action: String,
    /// More `key = value` lines for this child's section, verbatim.
    pub extra: Vec<String>,
}

impl ChildConfig {
    /// A transport-mode child with [`ESP_AES256GCM`], no automatic rekeying, started
    /// only by `initiate`.
    pub fn transport(name: &str) -> Self {
        ChildConfig {
            name: name.to_owned(),
            mode: Mode::Transport,
            esp_proposals: vec![ESP_AES256GCM.to_owned()],
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            rekey_time: NO_REKEY,
            start_action: "none".to_owned(),
            extra: Vec::new(),
        }
    }
}

/// One connection (`connections.<name>`): an IKE SA with a peer and its children.
/// Authentication is by certificate on both sides: ours is [`CharonConfig::identity`],
/// the peer's must chain to [`CharonConfig::ca_pem`] and carry [`Connection::remote_id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Its name, which `rekey_ike` and `terminate_ike` take.
    pub name: String,
    /// Our address (`local_addrs`).
    pub local_addr: IpAddr,
    /// The peer's address (`remote_addrs`).
    pub remote_addr: IpAddr,
    /// The peer's identity (an FQDN; `remote.id`).
    pub remote_id: String,
    /// IKE proposals, in order of preference, e.g. [`IKE_AES256GCM_X25519`].
    pub ike_proposals: Vec<String>,
    /// When charon rekeys the IKE SA by itself: [`NO_REKEY`] unless a test wants it.
    pub rekey_time: Duration,
    /// Whether to offer MOBIKE (RFC 4555); off by default, so addresses never move.
    pub mobike: bool,
    /// `local.send_cert`: `always` by default (`ifasked` is strongSwan's default).
    pub send_cert: String,
    /// The child SAs.
    pub children: Vec<ChildConfig>,
    /// More `key = value` lines for the connection's section, verbatim.
    pub extra: Vec<String>,
}

impl Connection {
    /// A host-to-host connection named `name` with [`IKE_AES256GCM_X25519`] and one
    /// transport-mode child, [`ChildConfig::transport`], of the same name.
    pub fn host_to_host(name: &str, local: IpAddr, remote: IpAddr, remote_id: &str) -> Self {
        Connection {
            name: name.to_owned(),
            local_addr: local,
            remote_addr: remote,
            remote_id: remote_id.to_owned(),
            ike_proposals: vec![IKE_AES256GCM_X25519.to_owned()],
            rekey_time: NO_REKEY,
            mobike: false,
            send_cert: "always".to_owned(),
            children: vec![ChildConfig::transport(name)],
            extra: Vec::new(),
        }
    }

    /// Replaces the IKE proposals.
    #[must_use]
    pub fn with_ike_proposals(mut self, proposals: &[&str]) -> Self {
        self.ike_proposals = proposals.iter().map(|&p| p.to_owned()).collect();
        self
    }

    /// Replaces every child's ESP proposals.
    #[must_use]
    pub fn with_esp_proposals(mut self, proposals: &[&str]) -> Self {
        for child in &mut self.children {
            child.esp_proposals = proposals.iter().map(|&p| p.to_owned()).collect();
        }
        self
    }
}

/// Everything one charon instance is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharonConfig {
    /// Our identity: ID, certificate and private key.
    pub identity: Identity,
    /// The CA certificate (PEM) that peers' certificates must chain to.
    pub ca_pem: String,
    /// The connections.
    pub connections: Vec<Connection>,
    /// More lines for the `charon { }` section of strongswan.conf, verbatim (they come
    /// last, so they override the harness's own settings).
    pub strongswan_extra: Vec<String>,
}

impl CharonConfig {
    /// A configuration with these connections and nothing extra.
    pub fn new(identity: Identity, ca_pem: String, connections: Vec<Connection>) -> Self {
        CharonConfig { identity, ca_pem, connections, strongswan_extra: Vec::new() }
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

fn render_strongswan_conf(dir: &Path, extra: &[String]) -> String {
    let dir = dir.display();
    let mut conf = format!(
        "# written by ikemesh-interop for one test's charon\n\
         charon {{\n\
        \x20 load = {CHARON_PLUGINS}\n\
        \x20 threads = 8\n\
        \x20 # transport mode and namespaced hosts: no routes, no virtual IPs to install\n\
        \x20 install_routes = no\n\
        \x20 install_virtual_ip = no\n\
        \x20 # a lost peer shows in about 25 s, not minutes\n\
        \x20 retransmit_timeout = 2.0\n\
        \x20 retransmit_tries = 3\n\
        \x20 plugins {{\n\
        \x20   vici {{\n\
        \x20     socket = unix://{dir}/charon.vici\n\
        \x20   }}\n\
        \x20 }}\n\
        \x20 filelog {{\n\
        \x20   charon {{\n\
        \x20     path = {dir}/charon.log\n\
        \x20     time_format = %H:%M:%S\n\
        \x20     ike_name = yes\n\
        \x20     append = no\n\
        \x20     flush_line = yes\n\
        \x20     default = 1\n\
        \x20     ike = 2\n\
        \x20     knl = 2\n\
        \x20     cfg = 2\n\
        \x20   }}\n\
        \x20 }}\n"
    );
    for line in extra {
        let _ = writeln!(conf, "  {line}");
    }
    let _ = write!(conf, "}}\nswanctl {{\n  load = {TOOL_PLUGINS}\n}}\n");
    conf
}

fn render_swanctl_conf(config: &CharonConfig) -> String {
    let mut conf = String::from("connections {\n");
    for c in &config.connections {
        let _ = write!(
            conf,
            "  {name} {{\n\
            \x20   version = 2\n\
            \x20   local_addrs = {local}\n\
            \x20   remote_addrs = {remote}\n\
            \x20   proposals = {proposals}\n\
            \x20   rekey_time = {rekey}\n\
            \x20   mobike = {mobike}\n\
            \x20   local {{\n\
            \x20     auth = pubkey\n\
            \x20     certs = local.pem\n\
            \x20     id = {local_id}\n\
            \x20   }}\n\
            \x20   remote {{\n\
            \x20     auth = pubkey\n\
            \x20     id = {remote_id}\n\
            \x20   }}\n",
            name = c.name,
            local = c.local_addr,
            remote = c.remote_addr,
            proposals = c.ike_proposals.join(", "),
            rekey = secs(c.rekey_time),
            mobike = if c.mobike { "yes" } else { "no" },
            local_id = config.identity.id,
            remote_id = c.remote_id,
        );
        let _ = writeln!(conf, "    send_cert = {}", c.send_cert);
        for line in &c.extra {
            let _ = writeln!(conf, "    {line}");
        }
        conf.push_str("    children {\n");
        for child in &c.children {
            let _ = write!(
                conf,
                "      {name} {{\n\
                \x20       mode = {mode}\n\
                \x20       esp_proposals = {proposals}\n\
                \x20       rekey_time = {rekey}\n\
                \x20       start_action = {start}\n",
                name = child.name,
                mode = match child.mode {
                    Mode::Transport => "transport",
                    Mode::Tunnel => "tunnel",
                },
                proposals = child.esp_proposals.join(", "),
                rekey = secs(child.rekey_time),
                start = child.start_action,
            );
            if !child.local_ts.is_empty() {
                let _ = writeln!(conf, "        local_ts = {}", child.local_ts.join(", "));
            }
            if !child.remote_ts.is_empty() {
                let _ = writeln!(conf, "        remote_ts = {}", child.remote_ts.join(", "));
            }
            for line in &child.extra {
                let _ = writeln!(conf, "        {line}");
            }
            conf.push_str("      }\n");
        }
        conf.push_str("    }\n  }\n");
    }
    conf.push_str("}\n");
    conf
}

/// A running charon in one host, with its own configuration, sockets and log; stopped
/// (SIGTERM, then SIGKILL after 5 s) and its folder deleted when dropped.
#[derive(Debug)]
pub struct Charon {
    host: Host,
    config: CharonConfig,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Charon {
    /// Writes `config` into a new private folder, starts charon in `host` and loads the
    /// configuration with swanctl. Returns once charon has every connection, key and
    /// certificate.
    pub fn start(host: &Host, config: CharonConfig) -> io::Result<Charon> {
        let dir = tempfile::Builder::new().prefix("ikemesh-charon.").tempdir()?;
        let root = dir.path();
        fs::create_dir(root.join("run"))?;
        fs::write(
            root.join("strongswan.conf"),
            render_strongswan_conf(root, &config.strongswan_extra),
        )?;
        let swanctl = root.join("swanctl");
        fs::create_dir(&swanctl)?;
        for sub in SWANCTL_DIRS {
            fs::create_dir(swanctl.join(sub))?;
        }
        fs::write(swanctl.join("x509/local.pem"), &config.identity.cert_pem)?;
        fs::write(swanctl.join("x509ca/ca.pem"), &config.ca_pem)?;
        fs::write(swanctl.join("private/local.key"), &config.identity.key_pem)?;
        fs::write(swanctl.join("swanctl.conf"), render_swanctl_conf(&config))?;

        let out = fs::File::create(root.join("charon.out"))?;
        // The network namespace is the host's; the mount namespace is charon's own, with
        // our run/ over /run for its PID file (see the module documentation).
        let child = host
            .command("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$1" /run && exec "$2""#)
            .args(["sh", &path_str(&root.join("run"))?, CHARON])
            .env("STRONGSWAN_CONF", root.join("strongswan.conf"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| error(format!("cannot start charon in {}: {e}", host.name())))?;
        let mut charon = Charon { host: host.clone(), config, dir, child: Some(child) };
        charon.wait_ready()?;
        let load = charon.swanctl(&[
            "--load-all",
            "--noprompt",
            "--file",
            &path_str(&swanctl.join("swanctl.conf"))?,
        ])?;
        let want = format!("successfully loaded {} connections", charon.config.connections.len());
        if !load.contains(&want) {
            return Err(
                charon.fail(&format!("swanctl --load-all did not load everything:\n{load}"))
            );
        }
        Ok(charon)
    }

    /// Waits until charon answers on its vici socket.
    fn wait_ready(&mut self) -> io::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                self.child = None;
                return Err(self.fail(&format!("charon exited at start ({status})")));
            }
            if self.dir.path().join("charon.vici").exists()
                && self.vici_quiet("stats", &[], None).is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(self.fail(&format!("charon did not answer within {START_TIMEOUT:?}")));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host charon runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &CharonConfig {
        &self.config
    }

    /// The instance's private folder (configuration, credentials, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// charon's process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The vici socket's URI, for `swanctl --uri`.
    pub fn vici_uri(&self) -> String {
        format!("unix://{}/charon.vici", self.dir.path().display())
    }

    /// Path of charon's log (`ike`, `knl` and `cfg` at level 2, the rest at 1).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("charon.log")
    }

    /// charon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// An error saying `msg`, with what charon printed and the tail of its log.
    fn fail(&self, msg: &str) -> io::Error {
        let out = fs::read_to_string(self.dir.path().join("charon.out")).unwrap_or_default();
        let mut text = format!("charon in {}: {msg}", self.host.name());
        if !out.trim().is_empty() {
            let _ = write!(text, "\n--- charon's own output\n{}", out.trim_end());
        }
        let _ = write!(text, "\n--- charon log (last 40 lines)\n{}", self.log_tail(40));
        error(text)
    }

    fn swanctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("swanctl");
        cmd.env("STRONGSWAN_CONF", self.dir.path().join("strongswan.conf"))
            .args(args)
            .args(["--uri", &self.vici_uri()])
            .stdin(Stdio::null());
        cmd
    }

    fn swanctl_quiet(&self, args: &[&str]) -> io::Result<String> {
        let out = self.swanctl_command(args).output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(error(format!(
                "swanctl {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// Runs `swanctl ARGS --uri <this charon>`; its standard output, or an error with
    /// its output and the tail of charon's log.
    pub fn swanctl(&self, args: &[&str]) -> io::Result<String> {
        self.swanctl_quiet(args).map_err(|e| self.fail(&e.to_string()))
    }

    /// Sends vici request `cmd` with `args`; the response and the `event`s streamed
    /// meanwhile. A response with `success = no` is an error.
    fn vici_quiet(
        &self,
        cmd: &str,
        args: &[(&str, &str)],
        event: Option<&str>,
    ) -> io::Result<(Section, Vec<Section>)> {
        let socket = self.dir.path().join("charon.vici");
        let mut vici = Vici::connect(&socket, OP_TIMEOUT + Duration::from_secs(10))?;
        let (response, events) = vici.request(cmd, &vici::message(args), event)?;
        if response.value("success") == Some("no") {
            return Err(error(format!(
                "{cmd} failed: {}",
                response.value("errmsg").unwrap_or("(no message)")
            )));
        }
        Ok((response, events))
    }

    /// Sends vici request `cmd` (see strongSwan's vici README) with `args` as
    /// `key = value` pairs, collecting the events named `event` that charon streams
    /// while it answers; returns the response and those events. A response with
    /// `success = no` is an error, which quotes the tail of charon's log.
    pub fn request(
        &self,
        cmd: &str,
        args: &[(&str, &str)],
        event: Option<&str>,
    ) -> io::Result<(Section, Vec<Section>)> {
        self.vici_quiet(cmd, args, event).map_err(|e| self.fail(&format!("vici {e}")))
    }

    /// A command that streams `control-log` events (initiate, terminate): its log
    /// lines, one per line, as swanctl would print them.
    fn vici_logged(&self, cmd: &str, args: &[(&str, &str)]) -> io::Result<String> {
        let (_, events) = self.request(cmd, args, Some("control-log"))?;
        let mut log = String::new();
        for e in events {
            let _ = writeln!(
                log,
                "[{}] {}",
                e.value("group").unwrap_or("?"),
                e.value("msg").unwrap_or_default()
            );
        }
        Ok(log)
    }

    /// Initiates child SA `child` (and its IKE SA if there is none yet) and waits until
    /// it is established; returns charon's log lines of the initiation. An error if it
    /// failed or took longer than [`OP_TIMEOUT`].
    pub fn initiate(&self, child: &str) -> io::Result<String> {
        self.vici_logged("initiate", &[("child", child), ("timeout", &timeout_ms())])
    }

    /// Every IKE SA with its child SAs, as `swanctl --list-sas` reports them.
    pub fn list_sas(&self) -> io::Result<Vec<IkeSa>> {
        let (_, events) = self.request("list-sas", &[], Some("list-sa"))?;
        sa::ike_sas(&events).map_err(|e| self.fail(&e.to_string()))
    }

    /// The IKE SA of connection `conn`, if there is exactly one.
    pub fn ike_sa(&self, conn: &str) -> io::Result<Option<IkeSa>> {
        let mut sas: Vec<IkeSa> =
            self.list_sas()?.into_iter().filter(|sa| sa.name == conn).collect();
        match sas.len() {
            0 => Ok(None),
            1 => Ok(sas.pop()),
            n => Err(self.fail(&format!("{n} IKE SAs of connection {conn}: {sas:#?}"))),
        }
    }

    /// Polls [`list_sas`](Self::list_sas) until `done` holds, at most `timeout`;
    /// returns the SAs that satisfied it, or an error naming `what`.
    pub fn wait_for_sas(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[IkeSa]) -> bool,
    ) -> io::Result<Vec<IkeSa>> {
        let deadline = Instant::now() + timeout;
        loop {
            let sas = self.list_sas()?;
            if done(&sas) {
                return Ok(sas);
            }
            if Instant::now() > deadline {
                return Err(self.fail(&format!("{what}: not within {timeout:?}; SAs: {sas:#?}")));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Rekeys child SA `child` (charon initiates the `CREATE_CHILD_SA` exchange) and waits
    /// until its successor is installed; returns the successor. The old SA stays listed
    /// (not `INSTALLED`) on both sides for `charon.delete_rekeyed_delay`, 5 s by
    /// default, while its inbound half catches late packets.
    pub fn rekey_child(&self, child: &str) -> io::Result<ChildSa> {
        let sas = self.list_sas()?;
        let old = installed_child(&sas, child)
            .ok_or_else(|| self.fail(&format!("no installed child SA {child} to rekey")))?;
        self.request("rekey", &[("child-id", &old.uniqueid.to_string())], None)?;
        let sas = self.wait_for_sas(&format!("rekeying child SA {child}"), OP_TIMEOUT, |sas| {
            installed_child(sas, child).is_some_and(|c| c.uniqueid != old.uniqueid)
        })?;
        installed_child(&sas, child).ok_or_else(|| self.fail("the rekeyed child SA vanished"))
    }

    /// Rekeys the IKE SA of connection `conn` (charon initiates) and waits until the
    /// new SA is established and the old one gone; returns the new one.
    pub fn rekey_ike(&self, conn: &str) -> io::Result<IkeSa> {
        let old = self
            .ike_sa(conn)?
            .filter(IkeSa::is_established)
            .ok_or_else(|| self.fail(&format!("no established IKE SA {conn} to rekey")))?;
        self.request("rekey", &[("ike-id", &old.uniqueid.to_string())], None)?;
        let sas = self.wait_for_sas(&format!("rekeying IKE SA {conn}"), OP_TIMEOUT, |sas| {
            let mine: Vec<&IkeSa> = sas.iter().filter(|sa| sa.name == conn).collect();
            mine.len() == 1 && mine[0].uniqueid != old.uniqueid && mine[0].is_established()
        })?;
        sas.into_iter()
            .find(|sa| sa.name == conn)
            .ok_or_else(|| self.fail("the rekeyed IKE SA vanished"))
    }

    /// Deletes child SA `child` (charon sends the INFORMATIONAL DELETE) and waits until
    /// it is gone.
    pub fn terminate_child(&self, child: &str) -> io::Result<String> {
        let out = self.vici_logged("terminate", &[("child", child), ("timeout", &timeout_ms())])?;
        self.wait_for_sas(&format!("deleting child SA {child}"), OP_TIMEOUT, |sas| {
            sas.iter().all(|sa| sa.children_named(child).next().is_none())
        })?;
        Ok(out)
    }

    /// Deletes the IKE SA of connection `conn` with its children and waits until it is
    /// gone.
    pub fn terminate_ike(&self, conn: &str) -> io::Result<String> {
        let out = self.vici_logged("terminate", &[("ike", conn), ("timeout", &timeout_ms())])?;
        self.wait_for_sas(&format!("deleting IKE SA {conn}"), OP_TIMEOUT, |sas| {
            sas.iter().all(|sa| sa.name != conn)
        })?;
        Ok(out)
    }

    /// charon's global counters (the `counters` plugin): `ike-rekey-init`,
    /// `ike-rekey-resp`, `child-rekey`, `invalid`, `invalid-spi`, and messages by
    /// exchange and direction such as `ike-auth-in-req` or `create-child-out-resp`.
    pub fn counters(&self) -> io::Result<BTreeMap<String, u64>> {
        let (response, _) = self.request("get-counters", &[], None)?;
        sa::global_counters(&response).map_err(|e| self.fail(&e.to_string()))
    }

    /// How many IKE and child SA rekeyings charon took part in, either role:
    /// `(ike-rekey-init + ike-rekey-resp, child-rekey)`.
    pub fn rekey_counts(&self) -> io::Result<(u64, u64)> {
        let c = self.counters()?;
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        Ok((get("ike-rekey-init") + get("ike-rekey-resp"), get("child-rekey")))
    }

    /// Stops charon (SIGTERM; SIGKILL after 5 s) and reports how it ended.
    pub fn stop(mut self) -> io::Result<()> {
        match self.terminate() {
            Some(Ok(true)) | None => Ok(()),
            Some(Ok(false)) => Err(self.fail("charon did not stop on SIGTERM within 5 s")),
            Some(Err(e)) => Err(self.fail(&format!("stopping charon: {e}"))),
        }
    }

    /// SIGTERM, wait, SIGKILL: `Some(Ok(true))` if it stopped by itself.
    fn terminate(&mut self) -> Option<io::Result<bool>> {
        let mut child = self.child.take()?;
        let result = (|| {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                    child.wait()?;
                    return Ok(false);
                }
                thread::sleep(Duration::from_millis(20));
            }
            Ok(true)
        })();
        Some(result)
    }
}

/// The one installed child SA named `child`, across all IKE SAs.
fn installed_child(sas: &[IkeSa], child: &str) -> Option<ChildSa> {
    let mut found = sas.iter().flat_map(|sa| sa.children_named(child)).filter(|c| c.is_installed());
    let first = found.next()?;
    found.next().is_none().then(|| first.clone())
}

fn timeout_ms() -> String {
    OP_TIMEOUT.as_millis().to_string()
}

impl Drop for Charon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "charon in {} (log {}), last 60 lines of its log:\n{}",
                self.host.name(),
                self.log_path().display(),
                self.log_tail(60)
            );
        }
        let _ = self.terminate();
    }
}
