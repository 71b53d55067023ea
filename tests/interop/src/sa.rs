//! What charon reports about its SAs (vici's `list-sas`, what `swanctl --list-sas`
//! shows), read into types.
//!
//! vici messages are trees of [`Section`]s; [`IkeSa`] and [`ChildSa`] pick the fields
//! tests look at and keep every other plain value in `fields`.

use crate::error;
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

/// One item of a vici message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `key = value`.
    Value(String),
    /// `key = [ ... ]`.
    List(Vec<String>),
    /// `name { ... }`.
    Section(Section),
}

/// A vici section: named items in the order charon sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// The items, in order.
    pub items: Vec<(String, Item)>,
}

impl Section {
    /// The value of `key`, if it is a plain value.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.items.iter().find_map(|(k, item)| match item {
            Item::Value(v) if k == key => Some(v.as_str()),
            _ => None,
        })
    }

    /// The list `key` (empty if absent).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.items
            .iter()
            .find_map(|(k, item)| match item {
                Item::List(l) if k == key => Some(l.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The subsections, with their names.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(k, item)| match item {
            Item::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }

    /// The subsection `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        self.sections().find(|(k, _)| *k == key).map(|(_, s)| s)
    }

    /// Every plain value, by key.
    pub fn values(&self) -> BTreeMap<String, String> {
        self.items
            .iter()
            .filter_map(|(k, item)| match item {
                Item::Value(v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }
}

/// An IKE SA as charon lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSa {
    /// The connection's name.
    pub name: String,
    /// charon's unique id of this SA (a rekeyed SA gets a new one).
    pub uniqueid: u32,
    /// `CREATED`, `CONNECTING`, `ESTABLISHED`, `PASSIVE`, `REKEYING`, `REKEYED`,
    /// `DELETING` or `DESTROYING`.
    pub state: String,
    /// Whether charon was the original initiator.
    pub initiator: bool,
    /// The initiator's SPI.
    pub initiator_spi: u64,
    /// The responder's SPI (0 until known).
    pub responder_spi: u64,
    /// Local address.
    pub local_host: Option<IpAddr>,
    /// Remote address.
    pub remote_host: Option<IpAddr>,
    /// Local identity.
    pub local_id: String,
    /// Remote identity.
    pub remote_id: String,
    /// Negotiated encryption algorithm, e.g. `AES_GCM_16`.
    pub encr_alg: Option<String>,
    /// Its key size in bits.
    pub encr_keysize: Option<u32>,
    /// Negotiated PRF, e.g. `PRF_HMAC_SHA2_256`.
    pub prf_alg: Option<String>,
    /// Negotiated D-H group, e.g. `CURVE_25519` or `ECP_256`.
    pub dh_group: Option<String>,
    /// The child SAs.
    pub children: Vec<ChildSa>,
    /// Every plain value charon reported, by key (`local-port`, `established`,
    /// `rekey-time`, …).
    pub fields: BTreeMap<String, String>,
}

/// A child SA as charon lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSa {
    /// The child configuration's name.
    pub name: String,
    /// charon's unique id of this child SA (a rekeyed one gets a new one).
    pub uniqueid: u32,
    /// The reqid of its kernel state and policies.
    pub reqid: u32,
    /// `CREATED`, `ROUTED`, `INSTALLING`, `INSTALLED`, `UPDATING`, `REKEYING`,
    /// `REKEYED`, `RETRYING`, `DELETING`, `DELETED` or `DESTROYING`.
    pub state: String,
    /// `TRANSPORT` or `TUNNEL` (or `BEET`, `PASS`, `DROP`).
    pub mode: String,
    /// `ESP` or `AH`.
    pub protocol: String,
    /// Whether ESP is UDP-encapsulated.
    pub encap: bool,
    /// The inbound SPI (the one charon allocated).
    pub spi_in: u32,
    /// The outbound SPI (the peer's).
    pub spi_out: u32,
    /// Negotiated encryption algorithm, e.g. `AES_GCM_16`.
    pub encr_alg: Option<String>,
    /// Its key size in bits.
    pub encr_keysize: Option<u32>,
    /// Whether extended sequence numbers were negotiated.
    pub esn: bool,
    /// Bytes received on this SA (as the kernel counted them).
    pub bytes_in: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Local traffic selectors, e.g. `10.77.0.1/32`.
    pub local_ts: Vec<String>,
    /// Remote traffic selectors.
    pub remote_ts: Vec<String>,
    /// Every plain value charon reported, by key.
    pub fields: BTreeMap<String, String>,
}

fn hex_field<T: TryFrom<u64>>(s: &Section, key: &str) -> io::Result<T> {
    let text = s.value(key).unwrap_or("0");
    u64::from_str_radix(text, 16)
        .ok()
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| error(format!("bad {key}: {text:?}")))
}

fn num_field<T: std::str::FromStr>(s: &Section, key: &str) -> io::Result<Option<T>> {
    s.value(key).map(|v| v.parse().map_err(|_| error(format!("bad {key}: {v:?}")))).transpose()
}

impl IkeSa {
    /// Reads an IKE SA from its `list-sa` section.
    pub fn from_section(name: &str, s: &Section) -> io::Result<Self> {
        let children = s
            .section("child-sas")
            .map(|c| c.sections().map(|(_, child)| ChildSa::from_section(child)).collect())
            .transpose()?
            .unwrap_or_default();
        Ok(IkeSa {
            name: name.to_owned(),
            uniqueid: num_field(s, "uniqueid")?.unwrap_or(0),
            state: s.value("state").unwrap_or_default().to_owned(),
            initiator: s.value("initiator") == Some("yes"),
            initiator_spi: hex_field(s, "initiator-spi")?,
            responder_spi: hex_field(s, "responder-spi")?,
            local_host: num_field(s, "local-host")?,
            remote_host: num_field(s, "remote-host")?,
            local_id: s.value("local-id").unwrap_or_default().to_owned(),
            remote_id: s.value("remote-id").unwrap_or_default().to_owned(),
            encr_alg: s.value("encr-alg").map(str::to_owned),
            encr_keysize: num_field(s, "encr-keysize")?,
            prf_alg: s.value("prf-alg").map(str::to_owned),
            dh_group: s.value("dh-group").map(str::to_owned),
            children,
            fields: s.values(),
        })
    }

    /// Whether the SA is `ESTABLISHED`.
    pub fn is_established(&self) -> bool {
        self.state == "ESTABLISHED"
    }

    /// The SA's SPI pair, initiator's first.
    pub fn spis(&self) -> (u64, u64) {
        (self.initiator_spi, self.responder_spi)
    }

    /// The child SAs of configuration `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ChildSa> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The `INSTALLED` child SA of configuration `name`, if there is exactly one.
    pub fn installed_child(&self, name: &str) -> Option<&ChildSa> {
        let mut installed = self.children.iter().filter(|c| c.name == name && c.is_installed());
        let first = installed.next()?;
        installed.next().is_none().then_some(first)
    }
}

impl ChildSa {
    /// Reads a child SA from its section under `child-sas`.
    pub fn from_section(s: &Section) -> io::Result<Self> {
        Ok(ChildSa {
            name: s.value("name").unwrap_or_default().to_owned(),
            uniqueid: num_field(s, "uniqueid")?.unwrap_or(0),
            reqid: num_field(s, "reqid")?.unwrap_or(0),
            state: s.value("state").unwrap_or_default().to_owned(),
            mode: s.value("mode").unwrap_or_default().to_owned(),
            protocol: s.value("protocol").unwrap_or_default().to_owned(),
            encap: s.value("encap") == Some("yes"),
            spi_in: hex_field(s, "spi-in")?,
            spi_out: hex_field(s, "spi-out")?,
            encr_alg: s.value("encr-alg").map(str::to_owned),
            encr_keysize: num_field(s, "encr-keysize")?,
            esn: s.value("esn") == Some("1"),
            bytes_in: num_field(s, "bytes-in")?.unwrap_or(0),
            packets_in: num_field(s, "packets-in")?.unwrap_or(0),
            bytes_out: num_field(s, "bytes-out")?.unwrap_or(0),
            packets_out: num_field(s, "packets-out")?.unwrap_or(0),
            local_ts: s.list("local-ts"),
            remote_ts: s.list("remote-ts"),
            fields: s.values(),
        })
    }

    /// Whether the child SA is `INSTALLED`.
    pub fn is_installed(&self) -> bool {
        self.state == "INSTALLED"
    }
}

/// Reads the `list-sa` events of one `list-sas` request: one [`IkeSa`] per SA.
pub fn ike_sas(events: &[Section]) -> io::Result<Vec<IkeSa>> {
    let mut sas = Vec::new();
    for event in events {
        for (name, sa) in event.sections() {
            sas.push(IkeSa::from_section(name, sa)?);
        }
    }
    Ok(sas)
}

/// Reads the response to `get-counters`: the global counters (the `counters` plugin's
/// `ike-rekey-init`, `ike-rekey-resp`, `child-rekey`, `invalid`, message counts by
/// exchange and direction, …), which are in a section with an empty name.
pub fn global_counters(response: &Section) -> io::Result<BTreeMap<String, u64>> {
    let set = response.section("counters").and_then(|all| all.section("")).ok_or_else(|| {
        error("no global counters in charon's answer (is the counters plugin loaded?)")
    })?;
    set.values()
        .into_iter()
        .map(|(key, value)| match value.parse() {
            Ok(n) => Ok((key, n)),
            Err(_) => Err(error(format!("bad counter {key} = {value}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(items: &[(&str, Item)]) -> Section {
        Section { items: items.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect() }
    }

    fn value(v: &str) -> Item {
        Item::Value(v.to_owned())
    }

    fn list(items: &[&str]) -> Item {
        Item::List(items.iter().map(|&i| i.to_owned()).collect())
    }

    #[test]
    fn list_sa_events_read() {
        let child = section(&[
            ("name", value("esp")),
            ("uniqueid", value("1")),
            ("reqid", value("1")),
            ("state", value("INSTALLED")),
            ("mode", value("TRANSPORT")),
            ("protocol", value("ESP")),
            ("spi-in", value("cddeeb23")),
            ("spi-out", value("c27dc989")),
            ("encr-alg", value("AES_GCM_16")),
            ("encr-keysize", value("256")),
            ("esn", value("1")),
            ("bytes-in", value("840")),
            ("packets-in", value("10")),
            ("local-ts", list(&["10.77.0.1/32"])),
            ("remote-ts", list(&["10.77.0.2/32"])),
        ]);
        let sa = section(&[
            ("uniqueid", value("1")),
            ("state", value("ESTABLISHED")),
            ("local-host", value("10.77.0.1")),
            ("local-port", value("500")),
            ("remote-host", value("10.77.0.2")),
            ("local-id", value("a.ikemesh.test")),
            ("initiator", value("yes")),
            ("initiator-spi", value("9c56fb0d2a613265")),
            ("responder-spi", value("19d2536fa0b43c1b")),
            ("dh-group", value("CURVE_25519")),
            ("child-sas", Item::Section(section(&[("esp-1", Item::Section(child))]))),
        ]);
        let sas = ike_sas(&[section(&[("peer", Item::Section(sa))])]).unwrap();
        assert_eq!(sas.len(), 1);
        let sa = &sas[0];
        assert_eq!((sa.name.as_str(), sa.uniqueid, sa.is_established()), ("peer", 1, true));
        assert!(sa.initiator);
        assert_eq!(sa.spis(), (0x9c56_fb0d_2a61_3265, 0x19d2_536f_a0b4_3c1b));
        assert_eq!(sa.remote_host, Some("10.77.0.2".parse().unwrap()));
        assert_eq!(sa.dh_group.as_deref(), Some("CURVE_25519"));
        assert_eq!(sa.fields["local-port"], "500");
        let child = sa.installed_child("esp").unwrap();
        assert_eq!((child.spi_in, child.spi_out), (0xcdde_eb23, 0xc27d_c989));
        assert_eq!((child.mode.as_str(), child.esn, child.packets_in), ("TRANSPORT", true, 10));
        assert_eq!(child.local_ts, ["10.77.0.1/32"]);
        assert_eq!(child.remote_ts, ["10.77.0.2/32"]);
    }

    #[test]
    fn global_counters_are_the_unnamed_set() {
        let sets = section(&[
            (
                "",
                Item::Section(section(&[
                    ("ike-rekey-init", value("2")),
                    ("child-rekey", value("1")),
                ])),
            ),
            ("peer", Item::Section(section(&[("child-rekey", value("7"))]))),
        ]);
        let response = section(&[("counters", Item::Section(sets)), ("success", value("yes"))]);
        let counters = global_counters(&response).unwrap();
        assert_eq!(counters["ike-rekey-init"], 2);
        assert_eq!(counters["child-rekey"], 1);
    }

    #[test]
    fn bad_numbers_are_errors() {
        let sa = section(&[("initiator-spi", value("xyz"))]);
        assert!(ike_sas(&[section(&[("peer", Item::Section(sa))])]).is_err());
    }
}
