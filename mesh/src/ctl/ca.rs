//! `meshctl ca …`: the mesh's CA directory through `ca::Authority`, its join tokens, and
//! the enrollment service.
//!
//! # Join tokens
//!
//! The token store (`ca::enroll::TokenStore`) lives in `<CA dir>/tokens/` (mode 0700):
//! `meshctl ca token` and `meshctl ca serve` given the same `--dir` share it, and it is
//! backed up with the CA. A token pins the CA that issues at the time it is made (the
//! first certificate of the bundle); make tokens after `meshctl ca rotate`, not before.
//!
//! # The service's certificate
//!
//! `meshctl ca serve` makes a fresh P-256 key in memory (never written to disk) and has
//! the CA issue it a certificate for `--service-name`, valid [`SERVICE_CERT_LIFETIME`].
//! It serves with that certificate (followed by the bundle's CA certificates, which the
//! joining node's pin needs) and makes a new key and certificate, and restarts the
//! listener on the same address, when half of that lifetime has passed or when the
//! trust bundle changes (a rotation step run by another `meshctl`), so the service
//! always chains to the CA that tokens pin. Those certificates are recorded in the CA's
//! state like any other; one that stops being renewed (the service stopped) expires
//! within [`SERVICE_CERT_LIFETIME`].

use super::{Failure, files, json};
use crate::cli::{CaCommand, Output};
use ca::authority::{
    CaSummary, GenerationInfo, NodeKey, RevokedInfo, Role, generate_node_key, make_csr,
};
use ca::enroll::{CaPin, EnrollError, Listener, Service, ServiceCredentials, TokenStore};
use ca::{Algorithm, Authority, InitOptions, IssueOptions, Issuer as _};
use serde::Serialize;
use std::io::{IsTerminal as _, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where the join tokens live, under the CA directory.
pub(crate) const TOKENS_DIR: &str = "tokens";

/// How long the enrollment service's own certificate is valid; renewed at half of it.
pub(crate) const SERVICE_CERT_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// How often the service looks for a changed bundle or a certificate to renew.
const CHECK_EVERY: Duration = Duration::from_secs(5);

pub(super) fn run(command: &CaCommand, output: Output, out: &mut dyn Write) -> Result<(), Failure> {
    match command {
        CaCommand::Init { dir, mesh, algorithm } => init(dir, mesh, (*algorithm).into(), out),
        CaCommand::Sign { dir, name, csr, out: cert_out, ips, lifetime } => {
            files::check_absent(cert_out).map_err(Failure::new)?;
            let authority = open(dir)?;
            let data = std::fs::read(csr)
                .map_err(|e| Failure::new(format!("cannot read {}: {e}", csr.display())))?;
            let der = files::pem_or_der(&data, &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"])
                .map_err(|e| Failure::new(format!("{}: {e}", csr.display())))?;
            issue(&IssueFrom::Dir(authority), name, &der, ips, *lifetime, None, cert_out, out)
        }
        CaCommand::Issue { dir, ca_cert, ca_key, name, key_out, cert_out, ips, lifetime } => {
            if key_out == cert_out {
                return Err(Failure::new("give different files to --key-out and --cert-out"));
            }
            files::check_absent(key_out).map_err(Failure::new)?;
            files::check_absent(cert_out).map_err(Failure::new)?;
            let from = match (dir, ca_cert, ca_key) {
                (Some(dir), _, _) => IssueFrom::Dir(open(dir)?),
                (None, Some(cert), Some(key)) => IssueFrom::Files(cert, key),
                _ => return Err(Failure::new("give --dir, or --ca-cert with --ca-key")),
            };
            let key = generate_node_key(Algorithm::Ed25519).map_err(Failure::new)?;
            let csr = make_csr(name, key.pem()).map_err(Failure::new)?;
            issue(&from, name, &csr, ips, *lifetime, Some((key_out, key.pem())), cert_out, out)
        }
        CaCommand::Revoke { dir, name, serial } => {
            revoke(dir, name.as_deref(), serial.as_deref(), out)
        }
        CaCommand::Rotate { dir, stage, drop_old, force, algorithm } => {
            let algorithm = algorithm.map(Into::into);
            rotate(dir, *stage, *drop_old, *force, algorithm, out)
        }
        CaCommand::Show { dir } => {
            let summary = open(dir)?.show().map_err(Failure::new)?;
            if output == Output::Json {
                json(&ShowJson::from(&summary), out)
            } else {
                write!(out, "{summary}")?;
                Ok(())
            }
        }
        CaCommand::Bundle { dir, out: path } => {
            let bundle = open(dir)?.bundle_pem().map_err(Failure::new)?;
            files::replace(path, bundle.as_bytes(), 0o644).map_err(Failure::new)?;
            let count = bundle.matches("-----BEGIN CERTIFICATE-----").count();
            writeln!(
                out,
                "wrote the trust bundle ({count} CA certificate(s)) to {}",
                path.display()
            )?;
            Ok(())
        }
        CaCommand::Crl { dir, out: path } => {
            let authority = open(dir)?;
            let number = authority.refresh_crl().map_err(Failure::new)?;
            let crl = authority.crl_pem().map_err(Failure::new)?;
            files::replace(path, crl.as_bytes(), 0o644).map_err(Failure::new)?;
            writeln!(out, "wrote CRL number {number} (one per trusted CA) to {}", path.display())?;
            Ok(())
        }
        CaCommand::Token { dir, name, ttl } => {
            let authority = open(dir)?;
            let pin = current_pin(&authority)?;
            let store = TokenStore::open(&dir.join(TOKENS_DIR)).map_err(Failure::new)?;
            let token = store.create(name, *ttl, pin).map_err(Failure::new)?;
            // The token alone, so that `TOKEN=$(meshctl ca token …)` works.
            writeln!(out, "{}", token.expose())?;
            Ok(())
        }
        CaCommand::Serve { dir, listen, service_name } => serve(dir, *listen, service_name, out),
    }
}

fn init(dir: &Path, mesh: &str, algorithm: Algorithm, out: &mut dyn Write) -> Result<(), Failure> {
    let mut options = InitOptions::new(mesh);
    options.algorithm = algorithm;
    let authority = Authority::init(dir, &options).map_err(Failure::new)?;
    let summary = authority.show().map_err(Failure::new)?;
    if let Some(g) = summary.generations.last() {
        writeln!(
            out,
            "created the CA of mesh '{}' in {}: generation {} ({}), valid until {}",
            summary.mesh,
            dir.display(),
            g.generation,
            g.algorithm,
            date(g.not_after)
        )?;
        writeln!(out, "sha256 {}", g.fingerprint)?;
    }
    writeln!(out, "trust bundle: {}", dir.join("bundle.pem").display())?;
    writeln!(out, "back up {} now: it holds the CA key", dir.display())?;
    Ok(())
}

fn revoke(
    dir: &Path,
    name: Option<&str>,
    serial: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let authority = open(dir)?;
    let (what, revoked) = match (name, serial) {
        (Some(name), _) => (format!("of '{name}'"), authority.revoke_name(name)),
        (None, Some(serial)) => (String::new(), authority.revoke_serial(serial)),
        (None, None) => return Err(Failure::new("give --name or --serial")),
    };
    let revoked = revoked.map_err(Failure::new)?;
    writeln!(out, "revoked serial(s) {} {what}", revoked.serials.join(", "))?;
    if !revoked.key_hashes.is_empty() {
        writeln!(out, "keys refused from now on (sha256): {}", revoked.key_hashes.join(", "))?;
    }
    writeln!(
        out,
        "CRL number {} written to {}; hand it to the nodes (meshctl ca crl --out FILE) and \
         reload them",
        revoked.crl_number,
        dir.join("crl.pem").display()
    )?;
    Ok(())
}

fn rotate(
    dir: &Path,
    stage: bool,
    drop_old: bool,
    force: bool,
    algorithm: Option<Algorithm>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let authority = open(dir)?;
    if stage {
        let g = authority.stage_rotation(algorithm).map_err(Failure::new)?;
        writeln!(
            out,
            "staged CA generation {} ({}, sha256 {}): trusted from now on, issuing nothing yet",
            g.generation, g.algorithm, g.fingerprint
        )?;
        writeln!(
            out,
            "next: nodes pick up the new bundle when they renew; once `meshctl ca show` lists \
             nobody under awaiting, run `meshctl ca rotate`"
        )?;
    } else if drop_old {
        let dropped = authority.drop_previous(force).map_err(Failure::new)?;
        writeln!(
            out,
            "dropped CA generation {}: out of the bundle, its key deleted",
            dropped.generation
        )?;
        if !dropped.stranded.is_empty() {
            writeln!(out, "stranded (they must enroll again): {}", dropped.stranded.join(", "))?;
        }
    } else {
        let g = authority.rotate_to(algorithm).map_err(Failure::new)?;
        writeln!(
            out,
            "CA generation {} ({}) issues from now on; the previous one stays trusted",
            g.generation, g.algorithm
        )?;
        writeln!(
            out,
            "next: once every node has renewed (`meshctl ca show` lists nobody under \
             awaiting), run `meshctl ca rotate --drop-old`"
        )?;
    }
    Ok(())
}

fn open(dir: &Path) -> Result<Authority, Failure> {
    Authority::open(dir).map_err(Failure::new)
}

/// The pin of the CA that issues now: the bundle's first certificate.
fn current_pin(authority: &Authority) -> Result<CaPin, Failure> {
    let bundle = authority.bundle_pem().map_err(Failure::new)?;
    CaPin::of_cert_pem(bundle.as_bytes()).map_err(Failure::new)
}

/// Where a certificate is issued from.
enum IssueFrom<'a> {
    /// A CA directory, which records what it issues.
    Dir(Authority),
    /// The CA's certificate and key files, recording nothing.
    Files(&'a Path, &'a Path),
}

/// Issues for `csr`, writes the key (if one was made here) and the certificate, says so.
#[allow(clippy::too_many_arguments)]
fn issue(
    from: &IssueFrom<'_>,
    name: &str,
    csr: &[u8],
    ips: &[IpAddr],
    lifetime: Option<Duration>,
    key: Option<(&PathBuf, &str)>,
    cert_out: &Path,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let options = IssueOptions { ips: ips.to_vec(), lifetime };
    let issued = match from {
        IssueFrom::Dir(authority) => authority.issue_with(name, csr, &options),
        IssueFrom::Files(cert, key) => {
            ca::authority::issue_detached(cert, key, name, csr, &options)
        }
    }
    .map_err(Failure::new)?;
    if let Some((key_out, pem)) = key {
        files::write_new(key_out, pem.as_bytes(), 0o600).map_err(Failure::new)?;
        writeln!(out, "wrote the private key to {} (mode 0600)", key_out.display())?;
    }
    files::write_new(cert_out, issued.cert_pem.as_bytes(), 0o644).map_err(Failure::new)?;
    writeln!(
        out,
        "issued serial {} for '{}', valid until {}: wrote {}",
        issued.serial,
        name.to_ascii_lowercase(),
        date(issued.not_after),
        cert_out.display()
    )?;
    Ok(())
}

fn date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `meshctl ca show -o json`.
#[derive(Serialize)]
struct ShowJson<'a> {
    mesh: &'a str,
    node_lifetime_seconds: u64,
    issued_total: u64,
    valid: usize,
    crl_number: u64,
    crl_next_update: String,
    generations: Vec<GenerationJson<'a>>,
    revoked: Vec<RevokedJson<'a>>,
    awaiting: &'a [String],
    warnings: &'a [String],
}

#[derive(Serialize)]
struct GenerationJson<'a> {
    generation: u32,
    role: Role,
    algorithm: Algorithm,
    subject: &'a str,
    not_before: String,
    not_after: String,
    fingerprint: &'a str,
}

#[derive(Serialize)]
struct RevokedJson<'a> {
    name: &'a str,
    serial: &'a str,
    generation: u32,
    revoked_at: String,
    key_hash: &'a str,
}

impl<'a> From<&'a CaSummary> for ShowJson<'a> {
    fn from(s: &'a CaSummary) -> Self {
        let generation = |g: &'a GenerationInfo| GenerationJson {
            generation: g.generation,
            role: g.role,
            algorithm: g.algorithm,
            subject: &g.subject,
            not_before: date(g.not_before),
            not_after: date(g.not_after),
            fingerprint: &g.fingerprint,
        };
        let revoked = |r: &'a RevokedInfo| RevokedJson {
            name: &r.name,
            serial: &r.serial,
            generation: r.generation,
            revoked_at: date(r.revoked_at),
            key_hash: &r.key_hash,
        };
        ShowJson {
            mesh: &s.mesh,
            node_lifetime_seconds: s.node_lifetime.as_secs(),
            issued_total: s.issued_total,
            valid: s.valid,
            crl_number: s.crl_number,
            crl_next_update: date(s.crl_next_update),
            generations: s.generations.iter().map(generation).collect(),
            revoked: s.revoked.iter().map(revoked).collect(),
            awaiting: &s.awaiting,
            warnings: &s.warnings,
        }
    }
}

/// The service's credentials, the bundle they were made with, and when to renew them.
struct Prepared {
    cert_pem: String,
    key: NodeKey,
    bundle: String,
    renew_at: SystemTime,
}

/// Reads the bundle and has the CA issue the service a certificate for a new key.
fn prepare(authority: &Authority, service_name: &str) -> Result<Prepared, Failure> {
    let bundle = authority.bundle_pem().map_err(Failure::new)?;
    let key = generate_node_key(Algorithm::EcdsaP256).map_err(Failure::new)?;
    let csr = make_csr(service_name, key.pem()).map_err(Failure::new)?;
    let options = IssueOptions { ips: Vec::new(), lifetime: Some(SERVICE_CERT_LIFETIME) };
    let issued = authority.issue_with(service_name, &csr, &options).map_err(Failure::new)?;
    let now = SystemTime::now();
    let left = issued.not_after.duration_since(now).unwrap_or_default();
    tracing::info!(
        target: "meshctl::serve",
        name = service_name,
        serial = %issued.serial,
        not_after = %date(issued.not_after),
        "service certificate issued"
    );
    Ok(Prepared { cert_pem: issued.cert_pem, key, bundle, renew_at: now + left / 2 })
}

/// Makes the service of `prepared` and binds it on `addr`; with `retry`, tries again
/// for two seconds while the previous listener lets go of the address.
async fn bind(
    prepared: &Prepared,
    authority: &Arc<Authority>,
    tokens: &Arc<TokenStore>,
    addr: SocketAddr,
    retry: bool,
) -> Result<Listener, Failure> {
    let mut tries = 0;
    loop {
        let credentials = ServiceCredentials::from_pem(
            prepared.cert_pem.as_bytes(),
            prepared.key.pem().as_bytes(),
        )
        .map_err(Failure::new)?;
        let service =
            Service::new(credentials, tokens.clone(), authority.clone()).map_err(Failure::new)?;
        match service.bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e @ EnrollError::Bind { .. }) if retry && tries < 20 => {
                tries += 1;
                tracing::debug!(target: "meshctl::serve", error = %e, "bind failed, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(Failure::new(e)),
        }
    }
}

/// `meshctl ca serve`: the enrollment service in the foreground, until SIGTERM or
/// ctrl-c. Logs go to stderr (filter in `IKEMESH_LOG`, `RUST_LOG` style, default info);
/// stdout gets one line with the address it listens on.
fn serve(
    dir: &Path,
    listen: SocketAddr,
    service_name: &str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IKEMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
    let authority = Arc::new(open(dir)?);
    let tokens = Arc::new(TokenStore::open(&dir.join(TOKENS_DIR)).map_err(Failure::new)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::new(format!("cannot watch SIGTERM: {e}")))?;
        let stop = async {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "interrupt",
            }
        };
        tokio::pin!(stop);
        let mut prepared = prepare(&authority, service_name)?;
        let listener = bind(&prepared, &authority, &tokens, listen, false).await?;
        let addr = listener.local_addr();
        writeln!(out, "enrollment service '{service_name}' listening on {addr}")?;
        out.flush()?;
        let mut task = tokio::spawn(listener.run());
        loop {
            tokio::select! {
                why = &mut stop => {
                    tracing::info!(target: "meshctl::serve", "{why}: stopping");
                    task.abort();
                    return Ok(());
                }
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let reason = if SystemTime::now() >= prepared.renew_at {
                "the service certificate is half-way through its lifetime"
            } else {
                match authority.bundle_pem() {
                    Ok(bundle) if bundle != prepared.bundle => "the trust bundle changed",
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(target: "meshctl::serve", error = %e, "cannot read the trust bundle");
                        continue;
                    }
                }
            };
            // Prepare the next credentials while this service still serves.
            let next = match prepare(&authority, service_name) {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(target: "meshctl::serve", error = %e, "{reason}, but no new certificate; retrying");
                    continue;
                }
            };
            tracing::info!(target: "meshctl::serve", "{reason}: restarting the listener");
            task.abort();
            let _ = task.await;
            prepared = next;
            let listener = bind(&prepared, &authority, &tokens, addr, true).await?;
            task = tokio::spawn(listener.run());
        }
    })
}
