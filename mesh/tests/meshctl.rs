//! `meshctl` as operators run it: the built binary against a fake daemon (the real
//! control socket, `bind` + `serve`, answered with canned responses), the `ca` commands
//! on a CA in a tempdir, and an enrollment end to end against `meshctl ca serve`.
//! Nothing here needs root.

use mesh::control::proto::{
    ChildStatus, Counters, EspStatus, PeerEntry, PeerStatus, Reply, Request, Response, RolloutPeer,
    RolloutReport, Status,
};
use mesh::control::server;
use policy::Level;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");

type Answer = Box<dyn Fn(&Request) -> Response + Send + Sync>;

/// The control socket of a daemon that records what it is asked and answers from a
/// closure.
struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeDaemon {
    fn start(answer: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        let answer: Answer = Box::new(answer);
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run").join("meshd.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _context = runtime.enter();
            server::bind(&socket, None).unwrap()
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        runtime.spawn(server::serve(listener, tx));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        runtime.spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let response = answer(&request);
                seen.lock().unwrap().push(request);
                let _ = reply.send(response);
            }
        });
        FakeDaemon { _dir: dir, socket, requests, _runtime: runtime }
    }

    /// `meshctl --socket <ours> ARGS`.
    fn ctl(&self, args: &[&str]) -> Output {
        meshctl_at(&self.socket, args)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn meshctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(MESHCTL)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("IKEMESH_SOCKET")
        .output()
        .expect("meshctl runs")
}

fn meshctl(args: &[&str]) -> Output {
    Command::new(MESHCTL).args(args).env_remove("IKEMESH_SOCKET").output().expect("meshctl runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Its stdout, after checking it succeeded with nothing on stderr.
fn ok(out: &Output) -> String {
    assert!(out.status.success(), "meshctl failed ({}): {}", out.status, stderr(out));
    assert!(out.stderr.is_empty(), "stderr on success: {}", stderr(out));
    stdout(out)
}

/// Its stderr, after checking it failed with status 1 and printed nothing.
fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "stdout: {} stderr: {}", stdout(out), stderr(out));
    assert!(out.stdout.is_empty(), "stdout on failure: {}", stdout(out));
    let err = stderr(out);
    assert!(err.starts_with("meshctl: "), "{err}");
    assert_eq!(err.lines().count(), 1, "more than one line: {err}");
    err
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

const LONG_ERROR: &str = "AUTHENTICATION_FAILED from 10.0.0.3: the peer's certificate \
                          chains to no CA of our trust bundle (check the bundle on both sides)";

fn canned_status() -> Status {
    Status {
        node: "node-a".into(),
        version: "0.1.0".into(),
        uptime_seconds: 7300,
        esp: EspStatus { available: true, message: None },
        target: Level::Require,
        counters: Counters {
            retransmissions: 3,
            initiating: 1,
            waiting: 0,
            half_open: 0,
            sent: 1234,
            deferred: 2,
            send_failed: 0,
            errors_reported: 1,
        },
        peers: vec![
            PeerStatus {
                name: "node-b".into(),
                addresses: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
                level: Level::Require,
                ike: "established".into(),
                child: Some(ChildStatus {
                    spi_in: 0xc0ff_ee01,
                    spi_out: 0x0bad_f00d,
                    installed: true,
                }),
                bytes_in: 1536,
                bytes_out: 5 * 1024 * 1024,
                last_rekey: Some(now() - 300),
                last_error: None,
            },
            PeerStatus {
                name: "node-c".into(),
                addresses: vec!["10.0.0.3".parse().unwrap()],
                level: Level::Use,
                ike: "connecting".into(),
                child: None,
                bytes_in: 0,
                bytes_out: 0,
                last_rekey: None,
                last_error: Some(LONG_ERROR.into()),
            },
        ],
    }
}

#[test]
fn status_prints_an_80_column_table_a_wide_one_and_the_json() {
    let status = canned_status();
    let reply = status.clone();
    let daemon = FakeDaemon::start(move |_| Response::Ok { reply: Reply::Status(reply.clone()) });

    let table = ok(&daemon.ctl(&["status"]));
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(lines[0].contains("node-a") && lines[0].contains("0.1.0"), "{table}");
    assert!(lines[0].contains("target require") && lines[0].contains("ESP: available"), "{table}");
    assert_eq!(lines[1], "IKE: 3 retransmitted, 1 initiating, 0 waiting, 0 half-open");
    assert_eq!(lines[2], "UDP: 1234 sent, 2 deferred, 0 lost, 1 errors reported");
    for column in ["PEER", "ADDRESS", "LEVEL", "IKE", "CHILD", "IN", "OUT", "REKEYED", "ERROR"] {
        assert!(lines[3].contains(column), "{column} missing: {}", lines[3]);
    }
    assert!(lines[4].starts_with("node-b"), "{table}");
    for cell in ["10.0.0.2 ", "established", "c0ffee01/0badf00d", "1.5K", "5.0M", "5m ago"] {
        assert!(lines[4].contains(cell), "{cell} missing: {}", lines[4]);
    }
    assert!(lines[5].contains("connecting") && lines[5].ends_with("..."), "{}", lines[5]);
    for line in &lines {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line}");
    }

    let wide = ok(&daemon.ctl(&["status", "-o", "wide"]));
    println!("{wide}");
    assert!(wide.contains("10.0.0.2,fd00::2"), "{wide}");
    assert!(wide.contains(LONG_ERROR), "{wide}");

    let json = ok(&daemon.ctl(&["-o", "json", "status"]));
    let parsed: Status = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, status);
    assert!(daemon.requests().iter().all(|r| *r == Request::Status));
    assert_eq!(daemon.requests().len(), 3);
}

#[test]
fn peer_and_rollout_commands_send_what_was_typed() {
    let daemon = FakeDaemon::start(|request| match request {
        Request::PeerList => Response::Ok {
            reply: Reply::Peers {
                peers: vec![PeerEntry {
                    name: "node-b".into(),
                    addresses: vec!["10.0.0.2".parse().unwrap(), "10.1.0.2".parse().unwrap()],
                    source: "config".into(),
                }],
            },
        },
        Request::RolloutStatus => Response::Ok {
            reply: Reply::Rollout(RolloutReport {
                target: Level::Require,
                peers: vec![RolloutPeer {
                    name: "node-b".into(),
                    target: Level::Require,
                    current: Level::Use,
                    announced: Some(Level::Use),
                    blocked: Some("node-b has not announced require yet".into()),
                }],
            }),
        },
        Request::PeerAdd { dry_run: true, .. } => {
            Response::Ok { reply: Reply::Done { changes: vec!["would add peer node-c".into()] } }
        }
        _ => Response::Ok { reply: Reply::Done { changes: Vec::new() } },
    });

    let out = ok(&daemon.ctl(&["peer", "add", "node-c", "10.0.0.3", "fd00::3", "--dry-run"]));
    assert_eq!(out, "would add peer node-c (dry run)\n");
    let out = ok(&daemon.ctl(&["peer", "rm", "node-c"]));
    assert_eq!(out, "nothing to change\n");
    let list = ok(&daemon.ctl(&["peer", "list"]));
    assert!(list.starts_with("NAME") && list.contains("10.0.0.2,10.1.0.2"), "{list}");
    assert!(list.contains("config"), "{list}");
    ok(&daemon.ctl(&["rollout", "set", "require", "--peer", "node-b", "--dry-run"]));
    ok(&daemon.ctl(&["rollout", "set", "--peer", "node-b", "--clear"]));
    ok(&daemon.ctl(&["rollout", "set", "use"]));
    let rollout = ok(&daemon.ctl(&["rollout", "status"]));
    for text in ["mesh target require", "BLOCKED-BY", "node-b has not announced"] {
        assert!(rollout.contains(text), "{text} missing: {rollout}");
    }
    ok(&daemon.ctl(&["reload"]));

    assert_eq!(
        daemon.requests(),
        vec![
            Request::PeerAdd {
                name: "node-c".into(),
                addresses: vec!["10.0.0.3".parse().unwrap(), "fd00::3".parse().unwrap()],
                dry_run: true,
            },
            Request::PeerRemove { name: "node-c".into(), dry_run: false },
            Request::PeerList,
            Request::RolloutSet {
                level: Level::Require,
                peer: Some("node-b".into()),
                clear: false,
                dry_run: true,
            },
            Request::RolloutSet {
                level: Level::default(),
                peer: Some("node-b".into()),
                clear: true,
                dry_run: false,
            },
            Request::RolloutSet { level: Level::Use, peer: None, clear: false, dry_run: false },
            Request::RolloutStatus,
            Request::Reload,
        ]
    );

    // Usage errors are clap's, with status 2, and reach no daemon.
    let out = daemon.ctl(&["peer", "add", "node-d"]);
    assert_eq!(out.status.code(), Some(2));
    let out = daemon.ctl(&["rollout", "set", "maybe"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(daemon.requests().len(), 8);
}

#[test]
fn a_refusal_exits_1_with_the_daemon_s_line_on_stderr() {
    let daemon = FakeDaemon::start(|_| Response::Error {
        message: "no peer named 'node-x'; `meshctl peer list` shows the members".into(),
    });
    let err = failed(&daemon.ctl(&["peer", "rm", "node-x"]));
    assert_eq!(err, "meshctl: no peer named 'node-x'; `meshctl peer list` shows the members\n");
    // -o json changes nothing for failures.
    failed(&daemon.ctl(&["status", "-o", "json"]));
}

#[test]
fn no_daemon_exits_1_saying_meshd_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("meshd.sock");
    let err = failed(&meshctl_at(&socket, &["status"]));
    assert!(err.contains("meshd is not running"), "{err}");
    assert!(err.contains(&socket.display().to_string()), "{err}");
    // A socket file that nobody accepts on: the same.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let err = failed(&meshctl_at(&socket, &["peer", "list"]));
    assert!(err.contains("meshd is not running"), "{err}");
    // The environment names the socket when --socket does not.
    let out = Command::new(MESHCTL).arg("status").env("IKEMESH_SOCKET", &socket).output().unwrap();
    assert!(failed(&out).contains(&socket.display().to_string()));
}

/// Sends `line` raw to the socket, returns the answer line.
fn raw(socket: &Path, line: &[u8]) -> Response {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer (and close) before it has read everything we send.
    let _ = stream.write_all(line);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.matches('\n').count(), 1, "not one line: {answer:?}");
    serde_json::from_str(&answer).unwrap()
}

#[test]
fn a_bad_request_line_gets_an_error_and_never_reaches_the_daemon() {
    let daemon = FakeDaemon::start(|_| Response::Ok { reply: Reply::Done { changes: Vec::new() } });
    for (line, expect) in [
        (b"{\"op\":\"steal-keys\"}\n".to_vec(), "bad request"),
        (b"not json\n".to_vec(), "bad request"),
        (b"{\"op\":\"peer-add\",\"name\":\"x\"}\n".to_vec(), "bad request"),
        (b"\n".to_vec(), "empty request"),
        (vec![b'x'; 70 * 1024], "longer than 64 KiB"),
    ] {
        match raw(&daemon.socket, &line) {
            Response::Error { message } => {
                assert!(message.contains(expect), "{message}");
                assert!(!message.contains('\n'));
            }
            other @ Response::Ok { .. } => {
                panic!("accepted {:?}: {other:?}", String::from_utf8_lossy(&line))
            }
        }
    }
    assert!(daemon.requests().is_empty());
    // A good line still works, without a trailing newline too.
    assert!(matches!(raw(&daemon.socket, b"{\"op\":\"reload\"}"), Response::Ok { .. }));
    assert_eq!(daemon.requests(), vec![Request::Reload]);
}

#[test]
fn bind_replaces_a_stale_socket_and_refuses_a_live_one() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _context = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("meshd.sock");

    // Parent made; mode 0600.
    let live = server::bind(&path, None).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777,
        0o755
    );

    // Live: refused, and the file stays.
    let err = server::bind(&path, None).unwrap_err();
    assert_eq!(err.to_string(), format!("another meshd is listening on {}", path.display()));
    assert!(path.exists());

    // Stale (the listener is gone, the file is not): replaced.
    drop(live);
    assert!(path.exists());
    let again = server::bind(&path, None).unwrap();
    drop(again);

    // Group-accessible: 0660 and the group (our own, which needs no privilege).
    std::fs::remove_file(&path).unwrap();
    let gid = std::fs::metadata(dir.path()).unwrap().gid();
    let _grouped = server::bind(&path, Some(&gid.to_string())).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);

    // An unknown group, and a file that is not a socket, are refused.
    let other = dir.path().join("other.sock");
    let err = server::bind(&other, Some("no-such-group-ikemesh")).unwrap_err();
    assert!(err.to_string().contains("unknown group"), "{err}");
    std::fs::write(&other, b"precious").unwrap();
    let err = server::bind(&other, None).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), b"precious");
}

#[test]
fn completions_and_the_man_page_are_printed() {
    let bash = ok(&meshctl(&["completions", "bash"]));
    assert!(bash.contains("_meshctl") && bash.contains("enroll"), "{bash}");
    for shell in ["zsh", "fish"] {
        assert!(!ok(&meshctl(&["completions", shell])).is_empty());
    }
    let man = ok(&meshctl(&["man"]));
    assert!(man.contains(".TH meshctl"), "{man}");
    assert!(man.contains("rollout"), "{man}");
    let dir = tempfile::tempdir().unwrap();
    ok(&meshctl(&["man", "--out-dir", dir.path().to_str().unwrap()]));
    assert!(dir.path().join("meshctl.1").exists());
    assert!(dir.path().join("meshctl-ca-serve.1").exists());
    assert_eq!(meshctl(&["completions", "tcsh"]).status.code(), Some(2));
    assert_eq!(meshctl(&["no-such-command"]).status.code(), Some(2));
    assert!(ok(&meshctl(&["--version"])).contains("meshctl"));
}

#[test]
fn the_ca_commands_on_a_ca_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let dir = ca.to_str().unwrap();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_owned();

    let out = ok(&meshctl(&["ca", "init", "--dir", dir, "--mesh", "test mesh"]));
    assert!(out.contains("generation 1 (ed25519)"), "{out}");
    let err = failed(&meshctl(&["ca", "init", "--dir", dir, "--mesh", "again"]));
    assert!(err.contains("refusing to overwrite"), "{err}");

    // issue: a key (0600) and a certificate; never over an existing file.
    let (key, cert) = (path("a.key"), path("a.pem"));
    let issue = ["ca", "issue", "--dir", dir, "--name", "node-a", "--ip", "10.0.0.1"];
    let out = ok(&meshctl(&[&issue[..], &["--key-out", &key, "--cert-out", &cert]].concat()));
    assert!(out.contains("node-a"), "{out}");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let chain = ca::keys::load_cert_chain(Path::new(&cert)).unwrap();
    assert_eq!(ca::keys::ike_id(&chain[0]).unwrap().data, b"node-a");
    ca::PrivateKey::load(Path::new(&key)).unwrap().check_matches(&chain[0]).unwrap();
    let (key_before, cert_before) = (std::fs::read(&key).unwrap(), std::fs::read(&cert).unwrap());
    let err = failed(&meshctl(
        &[&issue[..], &["--key-out", &key, "--cert-out", &path("b.pem")]].concat(),
    ));
    assert!(err.contains("exists; refusing to overwrite"), "{err}");
    let err = failed(&meshctl(
        &[&issue[..], &["--key-out", &path("b.key"), "--cert-out", &cert]].concat(),
    ));
    assert!(err.contains("exists; refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), key_before);
    assert_eq!(std::fs::read(&cert).unwrap(), cert_before);
    assert!(!Path::new(&path("b.key")).exists() && !Path::new(&path("b.pem")).exists());

    // sign: a CSR made elsewhere, PEM; the name is the one given, not the CSR's.
    let node_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let csr = rcgen::CertificateParams::new(vec!["whatever".to_string()])
        .unwrap()
        .serialize_request(&node_key)
        .unwrap();
    std::fs::write(path("c.csr"), csr.pem().unwrap()).unwrap();
    let sign = ["ca", "sign", "--dir", dir, "--name", "node-c", "--csr", &path("c.csr")];
    ok(&meshctl(&[&sign[..], &["--out", &path("c.pem"), "--lifetime", "2h"]].concat()));
    let chain = ca::keys::load_cert_chain(Path::new(&path("c.pem"))).unwrap();
    assert_eq!(ca::keys::ike_id(&chain[0]).unwrap().data, b"node-c");
    let err = failed(&meshctl(&[&sign[..], &["--out", &path("c.pem")]].concat()));
    assert!(err.contains("exists"), "{err}");
    let err =
        failed(&meshctl(&[&sign[..], &["--out", &path("d.pem"), "--lifetime", "1m"]].concat()));
    assert!(err.contains("out of range"), "{err}");

    // show -o json.
    let show: serde_json::Value =
        serde_json::from_str(&ok(&meshctl(&["ca", "show", "--dir", dir, "-o", "json"]))).unwrap();
    assert_eq!(show["mesh"], "test mesh");
    assert_eq!(show["issued_total"], 2);
    assert_eq!(show["generations"][0]["role"], "current");
    assert_eq!(show["generations"][0]["algorithm"], "ed25519");
    let table = ok(&meshctl(&["ca", "show", "--dir", dir]));
    assert!(table.contains("test mesh") && table.contains("GEN"), "{table}");

    // token: one line, the token; the store lives in the CA directory.
    let token = ok(&meshctl(&["ca", "token", "--dir", dir, "--name", "node-e", "--ttl", "10m"]));
    assert_eq!(token.lines().count(), 1);
    assert!(token.starts_with("ikm1."), "{token}");
    ca::enroll::JoinToken::parse(&token).unwrap();
    let store = std::fs::read_to_string(ca.join("tokens").join("tokens.json")).unwrap();
    assert!(store.contains("node-e") && !store.contains(token.split('.').nth(1).unwrap()));
    let err = failed(&meshctl(&["ca", "token", "--dir", dir, "--name", "bad_name"]));
    assert!(err.contains("refused"), "{err}");

    // revoke by name and by serial.
    let out = ok(&meshctl(&["ca", "revoke", "--dir", dir, "--name", "node-a"]));
    assert!(out.contains("CRL number"), "{out}");
    let err = failed(&meshctl(&["ca", "revoke", "--dir", dir, "--name", "node-a"]));
    assert!(err.contains("no unrevoked certificate"), "{err}");
    assert_eq!(meshctl(&["ca", "revoke", "--dir", dir]).status.code(), Some(2));
    let show: serde_json::Value =
        serde_json::from_str(&ok(&meshctl(&["ca", "show", "--dir", dir, "-o", "json"]))).unwrap();
    assert_eq!(show["revoked"][0]["name"], "node-a");

    // bundle and crl.
    ok(&meshctl(&["ca", "bundle", "--dir", dir, "--out", &path("bundle.pem")]));
    let bundle = std::fs::read(path("bundle.pem")).unwrap();
    ca::TrustBundle::from_pem(&bundle).unwrap();
    let out = ok(&meshctl(&["ca", "crl", "--dir", dir, "--out", &path("crl.pem")]));
    assert!(out.contains("CRL number"), "{out}");
    assert!(std::fs::read_to_string(path("crl.pem")).unwrap().contains("BEGIN X509 CRL"));

    // rotate: stage, switch, drop (refused while node-c holds only an old certificate).
    ok(&meshctl(&["ca", "rotate", "--dir", dir, "--stage"]));
    ok(&meshctl(&["ca", "rotate", "--dir", dir]));
    let err = failed(&meshctl(&["ca", "rotate", "--dir", dir, "--drop-old"]));
    assert!(err.contains("node-c"), "{err}");
    let out = ok(&meshctl(&["ca", "rotate", "--dir", dir, "--drop-old", "--force"]));
    assert!(out.contains("stranded") && out.contains("node-c"), "{out}");
    assert_eq!(
        meshctl(&["ca", "rotate", "--dir", dir, "--stage", "--drop-old"]).status.code(),
        Some(2)
    );
    let show: serde_json::Value =
        serde_json::from_str(&ok(&meshctl(&["ca", "show", "--dir", dir, "-o", "json"]))).unwrap();
    let roles: Vec<&str> = show["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["retired", "current"]);
}

/// `meshctl ca serve`, killed when dropped.
struct Served {
    child: Child,
    addr: String,
}

impl Served {
    fn start(dir: &str, service_name: &str) -> Self {
        let mut child = Command::new(MESHCTL)
            .args(["ca", "serve", "--dir", dir, "--listen", "127.0.0.1:0"])
            .args(["--service-name", service_name])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
        assert!(line.contains("listening on 127.0.0.1:"), "ca serve said: {line:?}");
        Served { child, addr }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA of mesh "fleet" made by `meshctl ca init` in a tempdir, for the commands that
/// take its certificate and key files rather than its directory.
struct FileCa {
    tmp: tempfile::TempDir,
    ca: PathBuf,
    cert: String,
    key: String,
}

impl FileCa {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        ok(&meshctl(&["ca", "init", "--dir", ca.to_str().unwrap(), "--mesh", "fleet"]));
        let file = |name: &str| ca.join(name).to_str().unwrap().to_owned();
        let (cert, key) = (file("ca-1.pem"), file("ca-1.key"));
        Self { tmp, ca, cert, key }
    }

    /// A file in the tempdir, beside the CA directory.
    fn path(&self, name: &str) -> String {
        self.tmp.path().join(name).to_str().unwrap().to_owned()
    }
}

#[test]
fn ca_issue_straight_from_the_ca_s_certificate_and_key_files() {
    // The BOSH job's pre-start: the CA's certificate and key come from the deployment's
    // secret store, with no CA directory.
    let f = FileCa::new();
    let (ca, path) = (&f.ca, |name: &str| f.path(name));
    let (ca_cert, ca_key) = (f.cert.as_str(), f.key.as_str());
    let issue = ["ca", "issue", "--ca-cert", ca_cert, "--ca-key", ca_key, "--name", "Node-7"];
    let out = ok(&meshctl(
        &[
            &issue[..],
            &["--ip", "10.0.0.7", "--key-out", &path("7.key"), "--cert-out", &path("7.pem")],
        ]
        .concat(),
    ));
    assert!(out.contains("'node-7'"), "{out}");
    // It verifies against the CA's bundle as the node it names, with the mesh's name.
    let chain = ca::keys::load_cert_chain(Path::new(&path("7.pem"))).unwrap();
    let id = ca::keys::ike_id(&chain[0]).unwrap();
    assert_eq!(id.data, b"node-7");
    let bundle = ca::TrustBundle::load(&ca.join("bundle.pem")).unwrap();
    ca::CertVerifier::new(bundle).verify(&id, &chain).unwrap();
    ca::PrivateKey::load(Path::new(&path("7.key"))).unwrap().check_matches(&chain[0]).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let org = parsed.subject().iter_organization().next().unwrap().as_str().unwrap().to_owned();
    assert_eq!(org, "fleet");
    // 30 days by default, not the CA directory's day: it is renewed only by re-issuing.
    let not_after = chain_not_after(&chain[0]);
    let days = (not_after - now()) / 86_400;
    assert!((29..=30).contains(&days), "lifetime {days} days");
    // Nothing recorded in the CA directory.
    let show: serde_json::Value = serde_json::from_str(&ok(&meshctl(&[
        "ca",
        "show",
        "--dir",
        ca.to_str().unwrap(),
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(show["issued_total"], 0);
}

#[test]
fn ca_issue_from_files_takes_the_bundle_and_refuses_what_does_not_fit() {
    let f = FileCa::new();
    let (ca, path) = (&f.ca, |name: &str| f.path(name));
    let (ca_cert, ca_key) = (f.cert.as_str(), f.key.as_str());
    ok(&meshctl(&[
        "ca",
        "issue",
        "--ca-cert",
        ca_cert,
        "--ca-key",
        ca_key,
        "--name",
        "node-7",
        "--key-out",
        &path("7.key"),
        "--cert-out",
        &path("7.pem"),
    ]));

    // The bundle works as --ca-cert too: the certificate of the key is picked from it.
    ok(&meshctl(&[
        "ca",
        "issue",
        "--ca-cert",
        ca.join("bundle.pem").to_str().unwrap(),
        "--ca-key",
        ca_key,
        "--name",
        "node-8",
        "--key-out",
        &path("8.key"),
        "--cert-out",
        &path("8.pem"),
    ]));
    // Refusals, one line each, nothing written: a certificate that is not the key's, a
    // key looser than 0600, --ca-cert without --ca-key, both --dir and --ca-cert.
    let other = |ca_cert: &str, ca_key: &str| {
        meshctl(&[
            "ca",
            "issue",
            "--ca-cert",
            ca_cert,
            "--ca-key",
            ca_key,
            "--name",
            "node-9",
            "--key-out",
            &path("9.key"),
            "--cert-out",
            &path("9.pem"),
        ])
    };
    let err = failed(&other(&path("7.pem"), ca_key));
    assert!(err.contains("no certificate in it is the certificate of"), "{err}");
    std::fs::set_permissions(ca_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = failed(&other(ca_cert, ca_key));
    assert!(err.contains("looser than 0600"), "{err}");
    std::fs::set_permissions(ca_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Usage errors (exit 2): --ca-cert without --ca-key; both --dir and --ca-cert.
    let usage = |ca_args: &[&str]| {
        let rest = ["--name", "n", "--key-out", "k", "--cert-out", "c"];
        let out = meshctl(&[&["ca", "issue"][..], ca_args, &rest[..]].concat());
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    };
    usage(&["--ca-cert", ca_cert]);
    usage(&["--dir", ca.to_str().unwrap(), "--ca-cert", ca_cert, "--ca-key", ca_key]);
    assert!(!Path::new(&path("9.key")).exists() && !Path::new(&path("9.pem")).exists());
}

/// A certificate's notAfter, in seconds since the epoch.
fn chain_not_after(der: &[u8]) -> u64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    u64::try_from(cert.validity().not_after.timestamp()).unwrap()
}

#[test]
fn enroll_end_to_end_against_ca_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let dir = ca.to_str().unwrap();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_owned();
    ok(&meshctl(&["ca", "init", "--dir", dir, "--mesh", "enroll mesh"]));
    let token = ok(&meshctl(&["ca", "token", "--dir", dir, "--name", "node-e"])).trim().to_owned();
    let served = Served::start(dir, "enroll.mesh.test");

    let no_daemon = tmp.path().join("no-meshd.sock");
    let (key, cert, bundle, crl) = (path("e.key"), path("e.pem"), path("ca.pem"), path("crl.pem"));
    let enroll = |token: &str, name: &str, key: &str, extra: &[&str]| {
        let mut args =
            vec!["enroll", "--server", &served.addr, "--service-name", "enroll.mesh.test"];
        args.extend(["--token", token, "--name", name, "--key", key, "--cert", &cert]);
        args.extend(["--ca", &bundle, "--crl", &crl]);
        args.extend(extra);
        meshctl_at(&no_daemon, &args)
    };
    let out = ok(&enroll(&token, "node-e", &key, &[]));
    assert!(out.contains("meshd is not running here"), "{out}");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let chain = ca::keys::load_cert_chain(Path::new(&cert)).unwrap();
    assert_eq!(ca::keys::ike_id(&chain[0]).unwrap().data, b"node-e");
    ca::PrivateKey::load(Path::new(&key)).unwrap().check_matches(&chain[0]).unwrap();
    ca::TrustBundle::from_pem(&std::fs::read(&bundle).unwrap()).unwrap();
    assert!(std::fs::read_to_string(&crl).unwrap().contains("BEGIN X509 CRL"));

    // The key is not replaced without --force; the token is spent either way.
    let err = failed(&enroll(&token, "node-e", &key, &[]));
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    let err = failed(&enroll(&token, "node-e", &key, &["--force"]));
    assert!(err.contains("already used"), "{err}");

    // A token for another name: refused, nothing written.
    let other = ok(&meshctl(&["ca", "token", "--dir", dir, "--name", "node-g"])).trim().to_owned();
    let err = failed(&enroll(&other, "node-f", &path("f.key"), &[]));
    assert!(err.contains("made for 'node-g'"), "{err}");
    assert!(!Path::new(&path("f.key")).exists());

    // With a daemon at --socket, enroll asks it to reload.
    let daemon = FakeDaemon::start(|_| Response::Ok {
        reply: Reply::Done { changes: vec!["re-authenticating 2 peers".into()] },
    });
    let token = ok(&meshctl(&["ca", "token", "--dir", dir, "--name", "node-f"])).trim().to_owned();
    let out = daemon.ctl(&[
        "enroll",
        "--server",
        &served.addr,
        "--service-name",
        "enroll.mesh.test",
        "--token",
        &token,
        "--name",
        "node-f",
        "--key",
        &path("f.key"),
        "--cert",
        &path("f.pem"),
        "--ca",
        &bundle,
    ]);
    let out = ok(&out);
    assert!(out.contains("meshd reloaded"), "{out}");
    assert_eq!(daemon.requests(), vec![Request::Reload]);
    let chain = ca::keys::load_cert_chain(Path::new(&path("f.pem"))).unwrap();
    assert_eq!(ca::keys::ike_id(&chain[0]).unwrap().data, b"node-f");
}

#[test]
fn ca_serve_follows_a_rotation_run_by_another_meshctl() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let dir = ca.to_str().unwrap();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_owned();
    ok(&meshctl(&["ca", "init", "--dir", dir, "--mesh", "rotating mesh"]));
    let served = Served::start(dir, "enroll.mesh.test");
    let no_daemon = tmp.path().join("no-meshd.sock");
    // `meshctl enroll` for `name` with a fresh token; its output.
    let enroll_run = |name: &str| {
        let token = ok(&meshctl(&["ca", "token", "--dir", dir, "--name", name])).trim().to_owned();
        let (key, cert, bundle) =
            (path(&format!("{name}.key")), path(&format!("{name}.pem")), path("ca.pem"));
        meshctl_at(
            &no_daemon,
            &[
                "enroll",
                "--server",
                &served.addr,
                "--service-name",
                "enroll.mesh.test",
                "--token",
                &token,
                "--name",
                name,
                "--key",
                &key,
                "--cert",
                &cert,
                "--ca",
                &bundle,
            ],
        )
    };
    // A successful enrollment; how many CA certificates the bundle it wrote holds.
    let enroll = |name: &str| {
        ok(&enroll_run(name));
        std::fs::read_to_string(path("ca.pem")).unwrap().matches("BEGIN CERTIFICATE").count()
    };
    assert_eq!(enroll("node-1"), 1);
    // After the switch, tokens pin the new CA: the service must chain to it, which it
    // does once it has noticed the new bundle (it looks every 5 s).
    ok(&meshctl(&["ca", "rotate", "--dir", dir, "--stage"]));
    ok(&meshctl(&["ca", "rotate", "--dir", dir]));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut n = 2;
    loop {
        let out = enroll_run(&format!("node-{n}"));
        if out.status.success() {
            break;
        }
        let err = stderr(&out);
        assert!(err.contains("not trusted"), "{err}");
        assert!(
            std::time::Instant::now() < deadline,
            "ca serve did not follow the rotation: {err}"
        );
        std::thread::sleep(Duration::from_millis(500));
        n += 1;
    }
    assert_eq!(
        std::fs::read_to_string(path("ca.pem")).unwrap().matches("BEGIN CERTIFICATE").count(),
        2
    );
    // The same address all along.
    assert_eq!(enroll("node-last"), 2);
}
