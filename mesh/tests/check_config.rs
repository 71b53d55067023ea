//! The configuration: a valid setup loads and checks clean; each kind of mistake gives
//! its own one-line problem naming the file and the key; the example documents every
//! key and parses.

use ca::Issuer as _;
use ca::authority::{Algorithm, Authority, InitOptions, IssueOptions, generate_node_key, make_csr};
use ike::crypto::dh::Group;
use mesh::config::{Config, Daemon, Ike, LogFormat, MemberSource, OnStop, Spa};
use policy::Level;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A CA, node-1's key and certificate, an SPA secret and a configuration, in a tempdir.
struct Setup {
    dir: tempfile::TempDir,
    ca: Authority,
    config: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::init(&dir.path().join("ca"), &InitOptions::new("test mesh")).unwrap();
        let setup = Setup { config: dir.path().join("meshd.toml"), dir, ca };
        fs::write(setup.path("ca.pem"), setup.ca.bundle_pem().unwrap()).unwrap();
        setup.node("node-1", Algorithm::Ed25519, "node.pem", "node.key");
        let secret = setup.path("spa.key");
        fs::write(&secret, [7u8; 32]).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A key (mode 0600) and a certificate for `name`, issued by the CA.
    fn node(&self, name: &str, alg: Algorithm, cert: &str, key: &str) {
        let node_key = generate_node_key(alg).unwrap();
        node_key.write_new(&self.path(key)).unwrap();
        self.issue(name, node_key.pem(), cert);
    }

    /// A certificate for `name`, to the key `key_pem`.
    fn issue(&self, name: &str, key_pem: &str, cert: &str) {
        let csr = make_csr(name, key_pem).unwrap();
        let issued = self.ca.issue_with(name, &csr, &IssueOptions::default()).unwrap();
        fs::write(self.path(cert), issued.cert_pem).unwrap();
    }

    /// The valid configuration.
    fn text(&self) -> String {
        let p = |name: &str| self.path(name).display().to_string();
        format!(
            r#"
[node]
name = "node-1"
addresses = ["10.77.0.1"]

[pki]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[spa]
secret = "{secret}"

[ike]
rekey = "2h"
jitter = 20

[[mesh.members]]
name = "node-2"
addresses = ["10.77.0.2"]

[daemon]
state_dir = "{state}"
"#,
            ca = p("ca.pem"),
            cert = p("node.pem"),
            key = p("node.key"),
            secret = p("spa.key"),
            state = p("state"),
        )
    }

    /// Loads `text` from the configuration file.
    fn load(&self, text: &str) -> Result<Config, Vec<String>> {
        fs::write(&self.config, text).unwrap();
        Config::load(&self.config)
    }

    /// The problems of `text`, which must have some, each one line.
    fn problems(&self, text: &str) -> Vec<String> {
        let lines = self.load(text).expect_err("the configuration was accepted");
        assert!(!lines.is_empty());
        for line in &lines {
            assert!(!line.contains('\n') && !line.contains('\r'), "not one line: {line:?}");
        }
        lines
    }

    /// The one problem of `text`, which must name the configuration file and contain
    /// `expected`.
    fn only_problem(&self, text: &str, expected: &str) -> String {
        let lines = self.problems(text);
        assert_eq!(lines.len(), 1, "expected one problem, got {lines:#?}");
        let line = lines.into_iter().next().unwrap();
        let file = format!("{}: ", self.config.display());
        assert!(line.starts_with(&file), "does not name the file: {line}");
        assert!(line.contains(expected), "expected {expected:?} in {line:?}");
        eprintln!("{line}");
        line
    }
}

#[test]
fn valid_setup_loads_and_checks_clean() {
    let s = Setup::new();
    let config = s.load(&s.text()).unwrap_or_else(|lines| panic!("{lines:#?}"));
    assert_eq!(config.check(), Vec::<String>::new());

    // What was written, and the defaults of what was not.
    assert_eq!(config.node.name, "node-1");
    assert_eq!(config.node.addresses, ["10.77.0.1".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(config.pki.crl, None);
    assert!(config.spa.enabled);
    assert_eq!(config.spa.port, policy::model::DEFAULT_SPA_PORT);
    assert_eq!(config.spa.pinhole_ttl, Duration::from_secs(30));
    assert_eq!(config.ike.port, 500);
    assert_eq!(config.ike.rekey, Duration::from_secs(7200));
    assert_eq!(config.ike.child_rekey, Duration::from_secs(3600));
    assert_eq!(config.ike.jitter, 20);
    assert_eq!(config.ike.liveness, Duration::from_secs(30));
    assert_eq!(config.ike.retransmit_base, Duration::from_secs(1));
    assert_eq!(config.ike.dh_groups, [Group::Curve25519, Group::Ecp256, Group::Modp2048]);
    assert_eq!(config.ike.esp_key_bits, [256, 128]);
    assert!(!config.ike.on_demand);
    assert_eq!(config.mesh.level, Level::Use);
    assert_eq!(config.daemon.control_socket, Path::new("/run/ikemesh/meshd.sock"));
    assert_eq!(config.daemon.control_group, None);
    assert_eq!(config.daemon.on_stop, OnStop::Keep);
    assert_eq!(config.daemon.log_format, LogFormat::Text);

    // The members: the listed one, then this node from [node].
    let members = config.members().unwrap();
    let names: Vec<(&str, MemberSource)> =
        members.iter().map(|(m, source)| (m.name.as_str(), *source)).collect();
    assert_eq!(names, [("node-2", MemberSource::Config), ("node-1", MemberSource::Config)]);
    let model = config.mesh_policy(members.into_iter().map(|(m, _)| m).collect());
    assert!(model.validate().is_empty());
    assert_eq!(model.spa_port, policy::model::DEFAULT_SPA_PORT);
    assert_eq!(model.level, Level::Use);

    let ike = config.ike_policy();
    assert_eq!(ike.groups, [Group::Curve25519, Group::Ecp256, Group::Modp2048]);
    assert_eq!(ike.pfs_groups, [Group::Curve25519, Group::Ecp256]);
    assert_eq!(ike.esp_gcm_key_bits, [256, 128]);
}

#[test]
fn ike_policy_follows_the_groups_and_key_lengths() {
    let s = Setup::new();
    let text = s.text().replace(
        "jitter = 20",
        "jitter = 20\ndh_groups = [\"modp2048\", \"curve25519\"]\nesp_key_bits = [128]",
    );
    let config = s.load(&text).unwrap_or_else(|lines| panic!("{lines:#?}"));
    let ike = config.ike_policy();
    assert_eq!(ike.groups, [Group::Modp2048, Group::Curve25519]);
    assert_eq!(ike.pfs_groups, [Group::Curve25519]);
    assert_eq!(ike.esp_gcm_key_bits, [128]);
}

#[test]
fn spa_disabled_needs_no_secret() {
    let s = Setup::new();
    let text = s.text();
    let secret = format!("secret = \"{}\"", s.path("spa.key").display());
    let config = s.load(&text.replace(&secret, "enabled = false")).unwrap();
    assert!(!config.spa.enabled);
    assert_eq!(config.spa.secret, None);
}

#[test]
fn missing_config_file() {
    let s = Setup::new();
    let lines = Config::load(&s.path("nothing.toml")).unwrap_err();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("nothing.toml: no such file"), "{lines:?}");
}

#[test]
fn bad_toml_syntax() {
    let s = Setup::new();
    let lines = s.problems(&s.text().replace("[pki]", "[pki"));
    let file = s.config.display().to_string();
    assert!(
        lines[0].starts_with(&format!("{file}: line 6, column 5: unclosed table")),
        "{lines:#?}"
    );
}

#[test]
fn unknown_key() {
    let s = Setup::new();
    s.only_problem(
        &s.text().replace("name = \"node-1\"", "nmae = \"node-1\""),
        "line 3, column 1: unknown key `nmae` in [node] (expected one of name, addresses)",
    );
    s.only_problem(
        &s.text().replace("rekey = \"2h\"", "rekey = \"2h\"\nrekey_time = \"1h\""),
        "unknown key `rekey_time` in [ike] (expected one of port, rekey, child_rekey,",
    );
    s.only_problem(
        &s.text().replace("name = \"node-2\"", "name = \"node-2\"\nlevels = \"use\""),
        "unknown key `levels` in [[mesh.members]] (expected one of name, addresses, level)",
    );
    s.only_problem(
        &format!("{}\n[nodes]\nname = \"x\"\n", s.text()),
        "unknown key `nodes` at the top level (expected one of node, pki, spa, ike, mesh, daemon)",
    );
}

#[test]
fn bad_address() {
    let s = Setup::new();
    s.only_problem(
        &s.text().replace("[\"10.77.0.1\"]", "[\"10.77.0.1\", \"10.0.0.300\"]"),
        "line 4, column 27: node.addresses: \"10.0.0.300\" is not an IP address",
    );
    s.only_problem(
        &s.text().replace("[\"10.77.0.2\"]", "[\"10.77.0.x\"]"),
        "mesh.members.addresses: \"10.77.0.x\" is not an IP address",
    );
    s.only_problem(
        &s.text().replace("[\"10.77.0.1\"]", "[\"127.0.0.1\"]"),
        "node.addresses: 127.0.0.1 is a loopback address",
    );
}

#[test]
fn every_section_reports_its_problem() {
    let s = Setup::new();
    let text = s
        .text()
        .replace("name = \"node-1\"", "nmae = \"node-1\"")
        .replace("rekey = \"2h\"", "rekey = \"2 fortnights\"")
        .replace("[daemon]", "[daemon]\non_stop = \"drop\"");
    let lines = s.problems(&text);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].contains("unknown key `nmae` in [node]"), "{lines:#?}");
    assert!(lines[1].contains("ike.rekey: \"2 fortnights\" is not a duration"), "{lines:#?}");
    assert!(lines[2].contains("daemon.on_stop: \"drop\" is not one of keep, flush"), "{lines:#?}");
}

#[test]
fn missing_tables_and_keys() {
    let lines = Config::parse("[node]\nname = \"a\"\n").unwrap_err();
    assert_eq!(
        lines,
        [
            "config: line 1, column 1: missing key `addresses` in [node]: add it",
            "config: missing table [pki]: add it, with ca, cert and key",
        ]
    );
}

#[test]
fn missing_key_file() {
    let s = Setup::new();
    fs::remove_file(s.path("node.key")).unwrap();
    s.only_problem(&s.text(), &format!("pki.key {}: no such file", s.path("node.key").display()));
}

#[test]
fn key_mode_0644() {
    let s = Setup::new();
    let key = s.path("node.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    s.only_problem(
        &s.text(),
        &format!("pki.key {}: mode 0644 is too open: chmod 600 it", key.display()),
    );
}

#[test]
fn key_of_the_wrong_type() {
    let s = Setup::new();
    let key = s.path("node.key");

    // The certificate given as the key.
    fs::copy(s.path("node.pem"), &key).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    s.only_problem(
        &s.text(),
        &format!("pki.key {}: holds a CERTIFICATE, not a private key", key.display()),
    );

    // Another node's key, of the same type.
    fs::remove_file(&key).unwrap();
    s.node("node-2", Algorithm::Ed25519, "node-2.pem", "node.key");
    s.only_problem(
        &s.text(),
        &format!("pki.key {}: this Ed25519 key does not match the certificate", key.display()),
    );

    // A key of another type.
    fs::remove_file(&key).unwrap();
    s.node("node-3", Algorithm::EcdsaP256, "node-3.pem", "node.key");
    s.only_problem(
        &s.text(),
        &format!(
            "pki.key {}: an ECDSA P-256 key does not match the certificate's Ed25519 key",
            key.display()
        ),
    );
}

#[test]
fn ca_bundle_unreadable() {
    let s = Setup::new();
    let ca = s.path("ca.pem");
    fs::remove_file(&ca).unwrap();
    fs::create_dir(&ca).unwrap();
    s.only_problem(&s.text(), &format!("pki.ca {}: is a directory, not a file", ca.display()));

    fs::remove_dir(&ca).unwrap();
    fs::write(&ca, "not a certificate\n").unwrap();
    s.only_problem(&s.text(), &format!("pki.ca {}: trust bundle:", ca.display()));

    // The node's certificate is no CA.
    fs::copy(s.path("node.pem"), &ca).unwrap();
    s.only_problem(&s.text(), "is not a CA certificate");
}

#[test]
fn certificate_of_another_ca() {
    let s = Setup::new();
    let other = Authority::init(&s.path("other-ca"), &InitOptions::new("other mesh")).unwrap();
    fs::write(s.path("ca.pem"), other.bundle_pem().unwrap()).unwrap();
    s.only_problem(&s.text(), "does not verify with pki.ca");
}

#[test]
fn cert_identity_is_not_node_name() {
    let s = Setup::new();
    // A certificate for node-2, to node-1's own key.
    let key = fs::read_to_string(s.path("node.key")).unwrap();
    s.issue("node-2", &key, "node.pem");
    s.only_problem(
        &s.text(),
        &format!(
            "pki.cert {}: the certificate is for \"node-2\", not node.name \"node-1\"",
            s.path("node.pem").display()
        ),
    );
}

#[test]
fn spa_enabled_without_secret() {
    let s = Setup::new();
    let secret = format!("secret = \"{}\"", s.path("spa.key").display());
    s.only_problem(
        &s.text().replace(&secret, "enabled = true"),
        "spa.secret: missing while SPA is enabled",
    );
    // A secret too short, and one too open.
    fs::write(s.path("spa.key"), b"short").unwrap();
    s.only_problem(&s.text(), "5 bytes is too short");
    fs::write(s.path("spa.key"), [1u8; 32]).unwrap();
    fs::set_permissions(s.path("spa.key"), fs::Permissions::from_mode(0o640)).unwrap();
    s.only_problem(&s.text(), "mode 0640 is too open: chmod 600 it");
}

#[test]
fn members_file() {
    let s = Setup::new();
    let file = s.path("members.toml");
    let text = s.text().replace(
        "[[mesh.members]]",
        &format!("[mesh]\nmembers_file = \"{}\"\n\n[[mesh.members]]", file.display()),
    );

    // Missing, or not absolute.
    s.only_problem(&text, &format!("mesh.members_file {}: no such file", file.display()));
    let relative = text.replace(&file.display().to_string(), "members.toml");
    s.only_problem(&relative, "mesh.members_file \"members.toml\": a relative path");

    // Broken.
    fs::write(&file, "[[members]]\nname = \"node-3\"\naddress = [\"10.77.0.3\"]\n").unwrap();
    s.only_problem(
        &text,
        &format!(
            "mesh.members_file {}: line 3, column 1: unknown key `address` in [[members]] \
             (expected one of name, addresses, level)",
            file.display()
        ),
    );
    fs::write(&file, "[[members]\n").unwrap();
    s.only_problem(&text, &format!("mesh.members_file {}: line 1, column", file.display()));

    // Good: its members come after the configuration's, this node last.
    fs::write(&file, "[[members]]\nname = \"node-3\"\naddresses = [\"10.77.0.3\"]\n").unwrap();
    let config = s.load(&text).unwrap_or_else(|lines| panic!("{lines:#?}"));
    let members: Vec<(String, MemberSource)> =
        config.members().unwrap().into_iter().map(|(m, source)| (m.name, source)).collect();
    assert_eq!(
        members,
        [
            ("node-2".to_owned(), MemberSource::Config),
            ("node-3".to_owned(), MemberSource::MembersFile),
            ("node-1".to_owned(), MemberSource::Config),
        ]
    );

    // Re-read on each call.
    fs::write(&file, "").unwrap();
    assert_eq!(config.members().unwrap().len(), 2);

    // A problem of a member there names the file.
    fs::write(&file, "[[members]]\nname = \"node-3\"\naddresses = [\"10.77.0.2\"]\n").unwrap();
    s.only_problem(
        &text,
        &format!(
            "mesh.members_file {}: address 10.77.0.2 belongs to both \"node-2\" and \"node-3\"",
            file.display()
        ),
    );
}

#[test]
fn this_node_listed_with_other_addresses() {
    let s = Setup::new();
    let text = s.text().replace(
        "[[mesh.members]]",
        "[[mesh.members]]\nname = \"node-1\"\naddresses = [\"10.77.0.9\"]\n\n[[mesh.members]]",
    );
    let line = s.only_problem(&text, "mesh.members: this node, \"node-1\", is listed with");
    assert!(line.contains("addresses 10.77.0.9, but node.addresses says 10.77.0.1"), "{line}");
    let config = Config::parse(&text).unwrap();
    assert!(config.members().unwrap_err().contains("node.addresses says 10.77.0.1"));

    // Listed with the same addresses (and a level of its own): taken as listed.
    let text = text.replace("10.77.0.9", "10.77.0.1").replace(
        "addresses = [\"10.77.0.1\"]\n\n[[mesh.members]]",
        "addresses = [\"10.77.0.1\"]\nlevel = \"off\"\n\n[[mesh.members]]",
    );
    let config = s.load(&text).unwrap_or_else(|lines| panic!("{lines:#?}"));
    let members = config.members().unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].0.name, "node-1");
    assert_eq!(members[0].0.level, Some(Level::Off));
}

#[test]
fn duplicate_member_address() {
    let s = Setup::new();
    let text =
        format!("{}\n[[mesh.members]]\nname = \"node-3\"\naddresses = [\"10.77.0.2\"]\n", s.text());
    s.only_problem(
        &text,
        "mesh.members: address 10.77.0.2 belongs to both \"node-2\" and \"node-3\": an address \
         belongs to one member",
    );
    // This node's address, taken by a member.
    let text = s.text().replace("[\"10.77.0.2\"]", "[\"10.77.0.1\"]");
    s.only_problem(
        &text,
        "mesh.members: address 10.77.0.1 belongs to both \"node-2\" and \"node-1\"",
    );
}

#[test]
fn jitter_90() {
    let s = Setup::new();
    s.only_problem(
        &s.text().replace("jitter = 20", "jitter = 90"),
        "ike.jitter: 90 is out of range: give a percentage from 0 to 50",
    );
}

#[test]
fn values_out_of_range() {
    let s = Setup::new();
    let text = s.text().replace(
        "jitter = 20",
        "jitter = 20\nchild_rekey = \"10s\"\nesp_key_bits = [256, 192]\ndh_groups = [\"x25519\", \"ecp384\"]",
    );
    let lines = s.problems(&text);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("ike.dh_groups: unknown group \"ecp384\""), "{lines:#?}");
    let text = text.replace(", \"ecp384\"", ", \"x25519\"");
    let lines = s.problems(&text);
    let expected = [
        "ike.child_rekey: 10s is out of range: give 30s to 7days",
        "ike.dh_groups: x25519 is listed twice",
        "ike.esp_key_bits: 192 is not allowed: only 128 and 256",
    ];
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(line.contains(expected), "expected {expected:?} in {line:?}");
    }
    s.only_problem(&s.text().replace("[spa]", "[spa]\nport = 500"), "spa.port: 500 cannot be used");
    s.only_problem(
        &s.text().replace("[daemon]", "[daemon]\ncontrol_socket = \"meshd.sock\""),
        "daemon.control_socket \"meshd.sock\": a relative path: give an absolute one",
    );
}

/// The keys of the schema, by table.
const KEYS: [(&str, &[&str]); 9] = [
    ("node", &["name", "addresses"]),
    ("pki", &["ca", "cert", "key", "crl"]),
    ("spa", &["enabled", "secret", "port", "pinhole_ttl"]),
    (
        "ike",
        &[
            "port",
            "rekey",
            "child_rekey",
            "jitter",
            "liveness",
            "retransmit_base",
            "dh_groups",
            "esp_key_bits",
            "on_demand",
            "max_initiating",
        ],
    ),
    ("mesh", &["level", "members_file"]),
    ("mesh.members", &["name", "addresses", "level"]),
    ("mesh.networks", &["name", "prefixes"]),
    ("mesh.exclusions", &["name", "protocol", "port", "prefix"]),
    ("daemon", &["state_dir", "control_socket", "control_group", "on_stop", "log_format"]),
];

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/meshd.example.toml");
    fs::read_to_string(path).unwrap()
}

/// The example with its `#key = value` settings and `#[table]` headers uncommented.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_parses_and_documents_every_key() {
    let text = example();
    let config = Config::parse(&text).unwrap_or_else(|lines| panic!("{lines:#?}"));
    assert_eq!(config.node.name, "node-1");
    assert_eq!(config.pki.crl, None);
    // The example shows the defaults.
    let spa = Spa { secret: Some("/etc/ikemesh/spa.key".into()), ..Spa::default() };
    assert_eq!(config.spa, spa);
    assert_eq!(config.ike, Ike::default());
    assert_eq!(config.daemon, Daemon::default());
    assert_eq!(config.mesh.level, Level::Use);

    // With the optional settings uncommented, it parses too.
    let all = Config::parse(&uncommented(&text)).unwrap_or_else(|lines| panic!("{lines:#?}"));
    assert!(all.pki.crl.is_some());
    assert!(all.mesh.members_file.is_some());
    assert_eq!(all.mesh.networks.len(), 1);
    assert_eq!(all.mesh.exclusions.len(), 1);
    assert_eq!(all.mesh.members[0].level, Some(Level::Use));
    assert_eq!(all.daemon.control_group.as_deref(), Some("ikemesh"));

    // Every key is set (or shown commented out), with a comment on it or just above.
    let mut documented = BTreeSet::new();
    let mut table = String::new();
    let mut previous = "";
    for line in uncommented(&text).lines() {
        let original = line;
        let line = line.trim();
        // (`uncommented` made `#key = value` lines keys; prose comments start "# ".)
        if let Some(header) = line.strip_prefix('[') {
            table = header.trim_matches(['[', ']']).to_owned();
        } else if let Some((key, _)) = line.split_once(" = ")
            && !line.starts_with('#')
        {
            let commented = previous.trim_start().starts_with("# ") || original.contains(" # ");
            if commented {
                documented.insert((table.clone(), key.trim().to_owned()));
            }
        }
        previous = original;
    }
    let mut missing = Vec::new();
    for (table, keys) in KEYS {
        for key in keys {
            if !documented.contains(&(table.to_owned(), (*key).to_owned())) {
                missing.push(format!("{table}.{key}"));
            }
        }
    }
    assert!(missing.is_empty(), "undocumented in the example: {missing:?}");
}

/// A broken configuration: what, how to break it, the words the one line must hold.
type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);

/// `meshd --check-config` itself: exit 0 and one line for a good configuration; for each
/// broken one, exit 1 and exactly one line on stderr that names the problem.
#[test]
fn meshd_check_config_prints_one_line_per_broken_config_and_exits_non_zero() {
    let meshd = env!("CARGO_BIN_EXE_meshd");
    let run = |config: &Path| {
        let out = std::process::Command::new(meshd)
            .args(["--check-config", "--config"])
            .arg(config)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let s = Setup::new();
    fs::write(&s.config, s.text()).unwrap();
    let (code, stderr) = run(&s.config);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("configuration is good"), "{stderr}");

    let key = s.path("node.key");
    let text = s.text();
    let cases: Vec<Case<'_>> = vec![
        ("missing file", Box::new(|| fs::remove_file(&s.config).unwrap()), "no such file"),
        (
            "bad TOML",
            Box::new(|| fs::write(&s.config, text.replace("[pki]", "[pki")).unwrap()),
            "unclosed table",
        ),
        (
            "unknown key",
            Box::new(|| {
                fs::write(&s.config, text.replace("name = \"node-1\"", "nmae = \"node-1\""))
                    .unwrap();
            }),
            "unknown key `nmae`",
        ),
        (
            "bad address",
            Box::new(|| {
                fs::write(&s.config, text.replace("[\"10.77.0.2\"]", "[\"10.77.0.300\"]")).unwrap();
            }),
            "\"10.77.0.300\" is not an IP address",
        ),
        (
            "unreadable key",
            Box::new(|| fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap()),
            "mode 0644 is too open",
        ),
        (
            "key of the wrong type",
            Box::new(|| {
                fs::copy(s.path("node.pem"), &key).unwrap();
                fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
            }),
            "holds a CERTIFICATE, not a private key",
        ),
    ];
    let key_pem = fs::read(&key).unwrap();
    for (what, break_it, expected) in cases {
        fs::write(&s.config, &text).unwrap();
        fs::write(&key, &key_pem).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        break_it();
        let (code, stderr) = run(&s.config);
        let lines: Vec<&str> = stderr.lines().collect();
        println!("{what}: {stderr}");
        assert_eq!(code, Some(1), "{what}: exit status");
        assert_eq!(lines.len(), 1, "{what}: one line expected, got {stderr:?}");
        assert!(
            lines[0].starts_with("meshd: ") && lines[0].contains(expected),
            "{what}: {stderr:?}"
        );
    }
}

#[test]
fn retransmissions_are_tried_for_a_minute_whatever_the_first_wait() {
    use mesh::config::retransmit_tries;
    assert_eq!(retransmit_tries(Duration::from_secs(1)), 7, "1 s: 75 s of sends");
    assert_eq!(retransmit_tries(Duration::from_secs(4)), 5, "strongSwan's 4 s: 89 s");
    assert_eq!(retransmit_tries(Duration::from_millis(100)), 11);
    assert_eq!(retransmit_tries(Duration::from_secs(60)), 5, "never fewer than five");
}
