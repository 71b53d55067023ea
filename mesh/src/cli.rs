//! Command-line definitions shared by the binaries, their man pages and completions.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `meshd`: the ikemesh daemon, one per node.
#[derive(Debug, Parser)]
#[command(
    name = "meshd",
    version,
    about = "The ikemesh IPsec mesh daemon",
    long_about = "The ikemesh IPsec mesh daemon, one per node: it keeps transport-mode ESP \
security associations with every member of the mesh through the kernel's XFRM layer, \
authenticated with certificates from the mesh's CA, behind Single Packet Authorization.\n\n\
The configuration (default /etc/ikemesh/meshd.toml) is checked at start; --check-config \
prints one line per problem. SIGHUP (or `meshctl reload`) re-reads the members, the trust \
bundle, the CRL, the certificate and key, and the mesh level. SIGTERM stops; by default \
(daemon.on_stop = \"keep\") the SAs and policies stay in the kernel and the next start \
adopts them. State lives in /var/lib/ikemesh, the control socket is \
/run/ikemesh/meshd.sock, and logs go to the journal under systemd, to stdout otherwise. \
See meshctl(1)."
)]
pub struct MeshdArgs {
    /// The configuration file.
    #[arg(long, short = 'c', env = "IKEMESH_CONFIG", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Check the configuration and the files it names, print one line per problem, and
    /// exit (0 when it is good).
    #[arg(long)]
    pub check_config: bool,
    /// Remove every SA, policy and nftables table of meshd's from the kernel, and exit.
    /// Only with meshd stopped: for a node that leaves for good (the package's removal
    /// runs it), since a meshd stopped the default way (keep) leaves them in place.
    #[arg(long, conflicts_with = "check_config")]
    pub flush: bool,
    /// Log filter (tracing's syntax, e.g. `info`, `debug`, `mesh=debug`); `RUST_LOG`
    /// overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Where `meshd` listens and `meshctl` calls, unless `--socket` or `IKEMESH_SOCKET` says
/// otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ikemesh/meshd.sock";

/// The environment variable that names the control socket (below `--socket`).
pub const SOCKET_ENV: &str = "IKEMESH_SOCKET";

/// `meshctl`: inspect and steer a running `meshd`, and run the mesh's CA.
#[derive(Debug, Parser)]
#[command(
    name = "meshctl",
    version,
    about = "Control the ikemesh daemon and the mesh CA",
    long_about = "Control the ikemesh daemon (meshd) over its control socket, and run the mesh's \
                  certificate authority.\n\nExit status: 0 on success, 1 when meshd or an \
                  operation refused or failed (one line on stderr), 2 on usage errors.",
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct MeshctlArgs {
    /// meshd's control socket.
    #[arg(long, global = true, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Output format: an ~80-column table, a wide table, or the JSON answer.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// What to do.
    #[command(subcommand)]
    pub command: MeshctlCommand,
}

impl MeshctlArgs {
    /// The control socket: `--socket`, else `$IKEMESH_SOCKET`, else [`DEFAULT_SOCKET`].
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone()
    }
}

/// How `meshctl` prints what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table of about 80 columns (long errors truncated).
    Table,
    /// A table with every address and the full errors.
    Wide,
    /// The daemon's (or the CA's) answer as JSON, pretty-printed.
    Json,
}

/// A rollout level as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    /// No ESP.
    Off,
    /// ESP where an SA exists; plaintext still passes.
    Use,
    /// Only ESP.
    Require,
}

impl From<LevelArg> for policy::Level {
    fn from(level: LevelArg) -> Self {
        match level {
            LevelArg::Off => policy::Level::Off,
            LevelArg::Use => policy::Level::Use,
            LevelArg::Require => policy::Level::Require,
        }
    }
}

/// A CA key algorithm as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlgorithmArg {
    /// Ed25519 (the default).
    Ed25519,
    /// ECDSA on P-256.
    #[value(alias = "ecdsa-p256", alias = "ecdsa")]
    P256,
    /// RSA, 3072 bits.
    #[value(alias = "rsa-3072")]
    Rsa,
}

impl From<AlgorithmArg> for ca::Algorithm {
    fn from(algorithm: AlgorithmArg) -> Self {
        match algorithm {
            AlgorithmArg::Ed25519 => ca::Algorithm::Ed25519,
            AlgorithmArg::P256 => ca::Algorithm::EcdsaP256,
            AlgorithmArg::Rsa => ca::Algorithm::Rsa3072,
        }
    }
}

/// The commands of `meshctl`.
#[derive(Debug, Subcommand)]
pub enum MeshctlCommand {
    /// This node and every peer: IKE and child SAs, bytes, last rekey, last error.
    Status,
    /// The mesh's members, as meshd holds them.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// The `use` to `require` rollout.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Reads the configuration's trust bundle, CRL, certificate, key, members and mesh level
    /// again, and re-authenticates every peer with a new IKE SA (make before break).
    Reload,
    /// The mesh's certificate authority (works on a CA directory, no daemon needed).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Gets this node's first certificate from the enrollment service with a join token.
    Enroll(EnrollArgs),
    /// Prints a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints the man page (roff), or writes one page per command, and meshd's, into a
    /// directory.
    Man {
        /// Write meshctl.1 and a page per subcommand into this directory instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// `meshctl peer …`
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Lists the members.
    #[command(visible_alias = "ls")]
    List,
    /// Adds a member, or changes its addresses.
    Add {
        /// Its name (the identity in its certificate).
        name: String,
        /// Its addresses.
        #[arg(required = true, value_name = "ADDR")]
        addresses: Vec<IpAddr>,
        /// Only say what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Removes a member, its SAs, policies and pinholes.
    #[command(visible_alias = "remove")]
    Rm {
        /// Its name.
        name: String,
        /// Only say what would change.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `meshctl rollout …`
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Sets the rollout target, mesh-wide or for one peer.
    Set {
        /// The new target (not needed with --clear).
        #[arg(value_enum, required_unless_present = "clear")]
        level: Option<LevelArg>,
        /// One peer only (its override).
        #[arg(long, value_name = "NAME")]
        peer: Option<String>,
        /// Clears the peer's override (with --peer).
        #[arg(long, requires = "peer")]
        clear: bool,
        /// Only say what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Per peer: target, current level, and what blocks it.
    Status,
}

/// `meshctl ca …`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Creates a CA in an empty or new directory.
    Init {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The mesh's name (in the CA's subject).
        #[arg(long, value_name = "NAME")]
        mesh: String,
        /// The CA key's algorithm.
        #[arg(long, value_enum, default_value_t = AlgorithmArg::Ed25519)]
        algorithm: AlgorithmArg,
    },
    /// Issues a certificate for a node's certificate request (PEM or DER).
    Sign {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The node's name (its certificate's dNSName), whatever the request asks for.
        #[arg(long, value_name = "NODE")]
        name: String,
        /// The certificate request.
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// Where to write the certificate (never overwritten).
        #[arg(long, value_name = "CERT")]
        out: PathBuf,
        /// An IP address to certify too (repeatable).
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
        /// The certificate's lifetime (1h to 366d) [default: the CA's].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        lifetime: Option<Duration>,
    },
    /// Makes a node key (Ed25519) and its certificate, for nodes that do not enroll.
    ///
    /// From a CA directory (--dir), or straight from the CA's certificate and key
    /// (--ca-cert and --ca-key) where a deployment tool's secret store holds the CA (the
    /// BOSH job's pre-start): such a certificate is recorded nowhere, lasts 30 days
    /// unless --lifetime says otherwise, and is revoked by serial or key, not by name.
    #[command(group(ArgGroup::new("ca").required(true).args(["dir", "ca_cert"])))]
    Issue {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The CA's certificate, PEM (or a bundle that holds it), instead of --dir.
        #[arg(long, value_name = "PEM", requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The CA's private key, PEM, mode 0600 (with --ca-cert).
        #[arg(long, value_name = "PEM", requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// The node's name.
        #[arg(long, value_name = "NODE")]
        name: String,
        /// Where to write the private key (mode 0600, never overwritten).
        #[arg(long, value_name = "KEY")]
        key_out: PathBuf,
        /// Where to write the certificate (never overwritten).
        #[arg(long, value_name = "CERT")]
        cert_out: PathBuf,
        /// An IP address to certify too (repeatable).
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
        /// The certificate's lifetime (1h to 366d) [default: the CA's].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        lifetime: Option<Duration>,
    },
    /// Revokes a node's certificates (and refuses their keys), or one certificate.
    #[command(group(ArgGroup::new("which").required(true).args(["name", "serial"])))]
    Revoke {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Every certificate of this node.
        #[arg(long, value_name = "NODE")]
        name: Option<String>,
        /// The certificate with this serial (hex).
        #[arg(long, value_name = "HEX")]
        serial: Option<String>,
    },
    /// Rotates the CA: --stage, then plain, then --drop-old (docs/ca-rotation.md).
    Rotate {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Step 1: a new CA joins the trust bundle, issuing nothing yet.
        #[arg(long, conflicts_with = "drop_old")]
        stage: bool,
        /// Step 3: the previous CA leaves the bundle and its key is deleted.
        #[arg(long)]
        drop_old: bool,
        /// With --drop-old: drop even while nodes hold only old-CA certificates.
        #[arg(long, requires = "drop_old")]
        force: bool,
        /// The new CA's algorithm [default: the current CA's].
        #[arg(long, value_enum, conflicts_with = "drop_old")]
        algorithm: Option<AlgorithmArg>,
    },
    /// The CA's generations, certificates issued and revoked, and what to act on.
    Show {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Writes the trust bundle (PEM) that nodes load.
    Bundle {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The file to write (replaced atomically).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Refreshes the CRLs (a new CRL number) and writes them (PEM).
    Crl {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The file to write (replaced atomically).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Creates a one-time join token for a node and prints it (only once).
    Token {
        /// The CA directory (its tokens live in DIR/tokens).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The node the token is bound to.
        #[arg(long, value_name = "NODE")]
        name: String,
        /// How long the token stays valid.
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Runs the enrollment service in the foreground (logs on stderr; stops on SIGTERM).
    Serve {
        /// The CA directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The address and port to listen on (port 0: any free port).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
        /// The DNS name nodes reach the service by (its certificate certifies it).
        #[arg(long, value_name = "NAME")]
        service_name: String,
    },
}

/// `meshctl enroll …` (its `Debug` leaves the token out).
#[derive(Args)]
pub struct EnrollArgs {
    /// The enrollment service.
    #[arg(long, value_name = "ADDR:PORT")]
    pub server: String,
    /// The service's name, as its certificate certifies it.
    #[arg(long, value_name = "NAME")]
    pub service_name: String,
    /// The join token `meshctl ca token` printed.
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
    /// This node's name (the token must be bound to it).
    #[arg(long, value_name = "NODE")]
    pub name: String,
    /// Where to write the new private key (mode 0600).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// Where to write the certificate.
    #[arg(long, value_name = "CERT")]
    pub cert: PathBuf,
    /// Where to write the trust bundle.
    #[arg(long = "ca", value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Where to write the CRL.
    #[arg(long, value_name = "CRL")]
    pub crl: Option<PathBuf>,
    /// Replace an existing key file with the new key.
    #[arg(long)]
    pub force: bool,
}

impl std::fmt::Debug for EnrollArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollArgs")
            .field("server", &self.server)
            .field("service_name", &self.service_name)
            .field("name", &self.name)
            .field("key", &self.key)
            .field("cert", &self.cert)
            .field("bundle", &self.bundle)
            .field("crl", &self.crl)
            .field("force", &self.force)
            .finish_non_exhaustive()
    }
}

/// `30s`, `90m`, `24h`, `7d` (humantime's format).
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 90m, 24h or 7d)"))
}
