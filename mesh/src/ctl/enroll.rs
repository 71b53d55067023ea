//! `meshctl enroll`: a node's first certificate, from the enrollment service, with a
//! join token.
//!
//! Makes an Ed25519 key here (it never leaves the node) and a request for the node's
//! name, enrolls (`ca::enroll::enroll`: the service must chain to the CA the token
//! pins), checks that the certificate certifies the name asked for, then writes the key
//! (mode 0600), the certificate, the trust bundle and the CRL, each atomically, and
//! asks a running meshd to reload.

use super::{CALL_TIMEOUT, Failure, files};
use crate::cli::EnrollArgs;
use crate::control::client;
use crate::control::proto::{Reply, Request, Response};
use ca::Algorithm;
use ca::authority::{check_node_name, generate_node_key, make_csr};
use ca::enroll::JoinToken;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::Path;

pub(super) fn run(args: &EnrollArgs, socket: &Path, out: &mut dyn Write) -> Result<(), Failure> {
    let name = check_node_name(&args.name).map_err(Failure::new)?;
    let token = JoinToken::parse(&args.token).map_err(Failure::new)?;
    let addr = resolve(&args.server)?;
    // Everything that could stop us from writing is checked before the token is spent.
    if args.force {
        if args.key.is_dir() {
            return Err(Failure::new(format!("{} is a directory", args.key.display())));
        }
    } else {
        files::check_absent(&args.key).map_err(|e| {
            Failure::new(format!("{e}; or give --force to replace the key with a new one"))
        })?;
    }
    for path in [Some(&args.cert), Some(&args.bundle), args.crl.as_ref()].into_iter().flatten() {
        if !parent_is_dir(path) {
            return Err(Failure::new(format!(
                "cannot write {}: its directory does not exist",
                path.display()
            )));
        }
    }

    let key = generate_node_key(Algorithm::Ed25519).map_err(Failure::new)?;
    let csr = make_csr(&name, key.pem()).map_err(Failure::new)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the runtime: {e}")))?;
    let enrolled = runtime
        .block_on(ca::enroll::enroll(addr, &args.service_name, &token, &csr))
        .map_err(Failure::new)?;
    let chain =
        ca::keys::cert_chain_from_pem(enrolled.cert_pem.as_bytes()).map_err(Failure::new)?;
    let id = ca::keys::ike_id(&chain[0]).map_err(Failure::new)?;
    let certified = String::from_utf8_lossy(&id.data).into_owned();
    if certified != name {
        return Err(Failure::new(format!(
            "the token was made for '{certified}', not '{name}'; nothing written. Make a token \
             for '{name}' (meshctl ca token --name {name})"
        )));
    }

    let write = |path: &Path, data: &[u8], mode: u32| {
        files::replace(path, data, mode).map_err(Failure::new)
    };
    if args.force {
        write(&args.key, key.pem().as_bytes(), 0o600)?;
    } else {
        files::write_new(&args.key, key.pem().as_bytes(), 0o600).map_err(Failure::new)?;
    }
    writeln!(out, "wrote the private key to {} (mode 0600)", args.key.display())?;
    write(&args.cert, enrolled.cert_pem.as_bytes(), 0o644)?;
    writeln!(out, "wrote the certificate for '{name}' to {}", args.cert.display())?;
    write(&args.bundle, enrolled.bundle_pem.as_bytes(), 0o644)?;
    writeln!(out, "wrote the trust bundle to {}", args.bundle.display())?;
    if let Some(crl) = &args.crl {
        write(crl, enrolled.crl_pem.as_bytes(), 0o644)?;
        writeln!(out, "wrote the CRL to {}", crl.display())?;
    }

    match client::call(socket, &Request::Reload, CALL_TIMEOUT) {
        Ok(Response::Ok { reply: Reply::Done { changes } }) => {
            writeln!(out, "meshd reloaded its credentials")?;
            for change in changes {
                writeln!(out, "  {change}")?;
            }
            Ok(())
        }
        Ok(Response::Ok { .. }) => {
            Err(Failure::new("enrolled, but meshd answered the reload oddly; run meshctl reload"))
        }
        Ok(Response::Error { message }) => {
            Err(Failure::new(format!("enrolled, but meshd refused to reload: {message}")))
        }
        Err(e) if e.is_not_running() => {
            writeln!(out, "meshd is not running here; it reads these files when it starts")?;
            Ok(())
        }
        Err(e) => Err(Failure::new(format!("enrolled, but meshd did not reload: {e}"))),
    }
}

/// `ADDR:PORT` or `HOST:PORT`, the first address it resolves to.
fn resolve(server: &str) -> Result<SocketAddr, Failure> {
    let mut addrs = server.to_socket_addrs().map_err(|e| {
        Failure::new(format!("enrollment service '{server}': {e} (give ADDR:PORT or HOST:PORT)"))
    })?;
    addrs.next().ok_or_else(|| {
        Failure::new(format!("enrollment service '{server}' resolves to no address"))
    })
}

fn parent_is_dir(path: &Path) -> bool {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.is_dir(),
        _ => true,
    }
}
