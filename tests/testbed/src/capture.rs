//! Packet capture on a host's link with tcpdump, read back as parsed frames.

use crate::error;
use crate::netns::{Host, Proc};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// IP protocol number of ESP (RFC 4303).
pub const IPPROTO_ESP: u8 = 50;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// A running tcpdump; [`Capture::stop`] ends it and returns what it saw.
#[derive(Debug)]
pub struct Capture {
    proc: Proc,
    path: PathBuf,
    stderr: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Capture {
    pub(crate) fn start(host: &Host, iface: &str, filter: &str) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ikemesh-capture").tempdir()?;
        let path = dir.path().join(format!("{}-{iface}.pcap", host.name()));
        let path_str = path.to_str().ok_or_else(|| error("capture path is not UTF-8"))?;
        let mut cmd = host.command("tcpdump");
        // --immediate-mode: hand each packet over at once (libpcap otherwise holds them
        // in its ring for up to a second, and loses them at SIGINT); -U: write each
        // packet at once; -Z root: keep the right to write into our private temp dir;
        // -n: no name lookups (nothing leaves the namespace).
        cmd.args(["-i", iface, "--immediate-mode", "-U", "-n", "-Z", "root", "-w", path_str]);
        if !filter.is_empty() {
            cmd.arg(filter);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| error(format!("cannot start tcpdump (is it installed?): {e}")))?;
        let stderr = child.stderr.take().ok_or_else(|| error("tcpdump has no stderr"))?;
        let mut proc = Proc::from_child(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // tcpdump says "listening on" once the socket is bound: only then is it certain
        // that no packet sent afterwards is missed.
        let mut said = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => said.push(line),
                Err(_) => {
                    let status = proc.try_wait()?;
                    return Err(error(format!(
                        "tcpdump on {}:{iface} did not start ({status:?}): {}",
                        host.name(),
                        said.join(" | ")
                    )));
                }
            }
        }
        Ok(Self { proc, path, stderr: rx, _dir: dir })
    }

    /// Where the pcap file is being written (it is deleted when the capture drops).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops tcpdump and returns every captured frame. Fails if the kernel dropped any
    /// packet, since a test could then miss what it looks for.
    ///
    /// (tcpdump's "received by filter" may exceed "captured" without any loss: libpcap
    /// counts packets that arrived before its filter was attached, and then drops the
    /// ones that do not match in user space. So only kernel drops count as loss;
    /// `--immediate-mode` and the pause before stopping keep the rest.)
    pub fn stop(self) -> std::io::Result<Vec<Frame>> {
        let Capture { proc, path, stderr, _dir } = self;
        // Packets sent just before this call may still be on their way up to tcpdump.
        std::thread::sleep(Duration::from_millis(200));
        let status = proc.stop(nix::sys::signal::Signal::SIGINT, Duration::from_secs(15))?.status;
        // tcpdump has exited, so its stderr pipe is closed: the reader thread sends what
        // is left and hangs up. (A wait per line would be a race under load.)
        let (mut captured, mut dropped) = (None, None);
        let mut said = Vec::new();
        while let Ok(line) = stderr.recv_timeout(Duration::from_secs(15)) {
            // "1 packet captured", "2 packets captured", …
            let count = |what: &str| -> Option<u64> {
                let (n, rest) = line.split_once(' ')?;
                let rest =
                    rest.strip_prefix("packets ").or_else(|| rest.strip_prefix("packet "))?;
                if rest == what { n.parse().ok() } else { None }
            };
            captured = captured.or(count("captured"));
            dropped = dropped.or(count("dropped by kernel"));
            said.push(line);
        }
        let (Some(captured), Some(dropped)) = (captured, dropped) else {
            return Err(error(format!(
                "tcpdump did not report its packet counts ({status}); it said: {}",
                said.join(" | ")
            )));
        };
        if dropped > 0 {
            return Err(error(format!("tcpdump reports {dropped} packets dropped by the kernel")));
        }
        let frames = read_pcap(&path)?;
        if frames.len() as u64 != captured {
            return Err(error(format!(
                "tcpdump captured {captured} packets but the file holds {}",
                frames.len()
            )));
        }
        Ok(frames)
    }
}

/// Reads every frame of a pcap file.
pub fn read_pcap(path: &Path) -> std::io::Result<Vec<Frame>> {
    let file = std::fs::File::open(path)?;
    let mut reader = pcap_file::pcap::PcapReader::new(file)
        .map_err(|e| error(format!("{}: not a pcap file: {e}", path.display())))?;
    let ethernet = reader.header().datalink == pcap_file::DataLink::ETHERNET;
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(|e| error(format!("{}: {e}", path.display())))?;
        frames.push(Frame { data: packet.data.into_owned(), ethernet });
    }
    Ok(frames)
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The bytes as captured, link-layer header included.
    pub data: Vec<u8>,
    ethernet: bool,
}

impl Frame {
    fn sliced(&self) -> Option<etherparse::SlicedPacket<'_>> {
        if !self.ethernet {
            return None;
        }
        etherparse::SlicedPacket::from_ethernet(&self.data).ok()
    }

    /// The protocol of the IP payload (IPv4 protocol, or the IPv6 header chain's last
    /// next-header value), if this is an IP frame.
    pub fn ip_protocol(&self) -> Option<u8> {
        match self.sliced()?.net? {
            etherparse::NetSlice::Ipv4(ip) => Some(ip.payload().ip_number.0),
            etherparse::NetSlice::Ipv6(ip) => Some(ip.payload().ip_number.0),
            etherparse::NetSlice::Arp(_) => None,
        }
    }

    /// Whether the frame is an ESP packet (not UDP-encapsulated).
    pub fn is_esp(&self) -> bool {
        self.ip_protocol() == Some(IPPROTO_ESP)
    }

    /// Whether the frame carries IPv6.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.sliced().and_then(|s| s.net), Some(etherparse::NetSlice::Ipv6(_)))
    }

    /// UDP source and destination ports, if this is a UDP frame.
    pub fn udp_ports(&self) -> Option<(u16, u16)> {
        match self.sliced()?.transport? {
            etherparse::TransportSlice::Udp(udp) => {
                Some((udp.source_port(), udp.destination_port()))
            }
            _ => None,
        }
    }

    /// Whether `needle` occurs anywhere in the frame's bytes.
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.data.windows(needle.len()).any(|w| w == needle)
    }
}
