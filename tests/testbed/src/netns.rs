//! Hosts as network namespaces.
//!
//! Every namespace is named `ikm-<pid>-<start>-<net>-<host>`, where `<pid>` and
//! `<start>` (the process's start time in clock ticks since boot) identify the process
//! that made it. Two test runs at once therefore never share a name, and a namespace
//! whose owner is gone — the run was killed with SIGKILL, so no destructor ran — is
//! recognisable and removed by [`clean_stale`], which [`Net::new`] calls once per
//! process before creating anything.
//!
//! Addresses: host `i` is `10.77.0.(i+1)/24` and `fd77::(i+1)/64` on its `eth0`. These
//! addresses exist only inside the namespaces a test creates.

use crate::{capture::Capture, error};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Prefix of every namespace this crate creates.
pub const PREFIX: &str = "ikm-";

/// Name of the interface that links each host to the others.
pub const LINK: &str = "eth0";

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the
    // last ')'. Field 3 is then the first after it, so field 22 is the 20th.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// `<pid>-<start>` of this process, the owner tag in every name we create.
fn owner_tag() -> String {
    let pid = std::process::id();
    format!("{pid}-{}", start_time(pid).unwrap_or(0))
}

/// Whether the process that created namespace `name` is still running.
fn owner_alive(name: &str) -> bool {
    let mut parts = name.strip_prefix(PREFIX).unwrap_or("").split('-');
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// Names of all namespaces with our prefix, alive or not.
pub fn list_ours() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match fs::read_dir("/run/netns") {
        Ok(dir) => {
            for entry in dir {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if name.starts_with(PREFIX) {
                    names.push(name);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// Removes namespaces whose creating process is gone; returns their names.
pub fn clean_stale() -> io::Result<Vec<String>> {
    let stale: Vec<String> = list_ours()?.into_iter().filter(|n| !owner_alive(n)).collect();
    for name in &stale {
        delete_ns(name);
    }
    Ok(stale)
}

/// Kills what still runs in namespace `name`, then deletes it. Best effort: used from
/// destructors, where there is no one to report to.
fn delete_ns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "delete", name]).stderr(Stdio::null()).status();
}

/// Runs a command to completion; its stdout on success, else an error with its stderr.
pub(crate) fn check_output(cmd: &mut Command) -> io::Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| error(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        Err(error(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn ip(args: &[&str]) -> io::Result<String> {
    check_output(Command::new("ip").args(args))
}

/// A group of hosts on one link, torn down when dropped.
#[derive(Debug)]
pub struct Net {
    hosts: Vec<Host>,
    /// Every namespace created so far, the switch's included, for teardown.
    namespaces: Vec<String>,
}

impl Net {
    /// Creates `n` hosts (at least 2): two are joined by one veth pair, more by a bridge
    /// in a namespace of its own.
    pub fn new(n: usize) -> io::Result<Self> {
        static CLEAN: Once = Once::new();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if !(2..=250).contains(&n) {
            return Err(error(format!("a net has 2 to 250 hosts, not {n}")));
        }
        CLEAN.call_once(|| {
            if let Err(e) = clean_stale() {
                eprintln!("testbed: cannot clean stale namespaces: {e}");
            }
        });
        let base = format!("{PREFIX}{}-{}", owner_tag(), NEXT.fetch_add(1, Ordering::Relaxed));
        // From here on, `net` owns whatever exists: an error drops it and cleans up.
        let mut net = Net { hosts: Vec::with_capacity(n), namespaces: Vec::new() };
        for i in 0..n {
            let ns = format!("{base}-h{i}");
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let index = u8::try_from(i + 1).map_err(|_| error("at most 250 hosts"))?;
            net.hosts.push(Host {
                name: format!("h{i}"),
                ns,
                ipv4: Ipv4Addr::new(10, 77, 0, index),
                ipv6: Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, u16::from(index)),
            });
        }
        if n == 2 {
            let (a, b) = (&net.hosts[0].ns, &net.hosts[1].ns);
            ip(&["-n", a, "link", "add", LINK, "type", "veth", "peer", "name", LINK, "netns", b])?;
        } else {
            let sw = format!("{base}-sw");
            ip(&["netns", "add", &sw])?;
            net.namespaces.push(sw.clone());
            ip(&["-n", &sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0"])?;
            ip(&["-n", &sw, "link", "set", "br0", "up"])?;
            for (i, host) in net.hosts.iter().enumerate() {
                let port = format!("p{i}");
                ip(&[
                    "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", LINK, "netns",
                    &host.ns,
                ])?;
                ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            }
        }
        for host in &net.hosts {
            let ns = host.ns.as_str();
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{}/24", host.ipv4), "dev", LINK])?;
            // nodad: the address is usable at once instead of after duplicate detection.
            ip(&["-n", ns, "addr", "add", &format!("{}/64", host.ipv6), "dev", LINK, "nodad"])?;
            ip(&["-n", ns, "link", "set", LINK, "up"])?;
        }
        Ok(net)
    }

    /// The hosts, in creation order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i`.
    ///
    /// # Panics
    /// If there is no host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Names of every namespace this net created (hosts, and the switch if any).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            delete_ns(ns);
        }
    }
}

/// One host: a network namespace with `eth0` on the net's link.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    ns: String,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
}

impl Host {
    /// Short name within the net: `h0`, `h1`, …
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// IPv4 address on `eth0`.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// IPv6 address on `eth0`.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }

    /// The address of one family: `v6` false for IPv4, true for IPv6.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 { self.ipv6.into() } else { self.ipv4.into() }
    }

    /// A command that runs `program` inside this host.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }

    /// Runs `args` inside this host; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> io::Result<String> {
        let (program, rest) = args.split_first().ok_or_else(|| error("empty command"))?;
        check_output(self.command(program).args(rest))
    }

    /// Runs a shell script inside this host; its stdout, or an error with its stderr.
    pub fn sh(&self, script: &str) -> io::Result<String> {
        self.run(&["sh", "-c", script])
    }

    /// Starts `args` inside this host in the background; killed when the handle drops.
    pub fn spawn(&self, args: &[&str]) -> io::Result<Proc> {
        let (program, rest) = args.split_first().ok_or_else(|| error("empty command"))?;
        let child = self
            .command(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Proc { child: Some(child) })
    }

    /// Runs `f` on a thread that has joined this host's network namespace, so sockets it
    /// opens live in the host. A panic in `f` is passed on to the caller.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> io::Result<R> {
        let ns = fs::File::open(format!("/run/netns/{}", self.ns))?;
        thread::scope(|scope| {
            let worker = scope.spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| error(format!("setns into {}: {e}", self.ns)))?;
                Ok(f())
            });
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Sends `count` UDP datagrams (`marker` followed by ` #i`) from this host to `to`'s
    /// address of one family on `port`, one per `gap`, and returns how many arrived at a
    /// socket bound there, waiting at most 2 s for each. A datagram from any other
    /// address is an error.
    pub fn udp_to(
        &self,
        to: &Host,
        v6: bool,
        port: u16,
        count: u32,
        marker: &[u8],
        gap: Duration,
    ) -> io::Result<u32> {
        use std::net::{SocketAddr, UdpSocket};
        let dst = SocketAddr::new(to.addr(v6), port);
        let sink = to.enter(|| UdpSocket::bind(dst))??;
        sink.set_read_timeout(Some(Duration::from_secs(2)))?;
        self.enter(|| -> io::Result<()> {
            let sock = UdpSocket::bind(SocketAddr::new(self.addr(v6), 0))?;
            for i in 0..count {
                let mut payload = marker.to_vec();
                payload.extend_from_slice(format!(" #{i}").as_bytes());
                sock.send_to(&payload, dst)?;
                thread::sleep(gap);
            }
            Ok(())
        })??;
        let mut got = 0;
        let mut buf = [0u8; 256];
        while got < count {
            let Ok((_, from)) = sink.recv_from(&mut buf) else { break };
            if from.ip() != self.addr(v6) {
                return Err(error(format!(
                    "datagram to {dst} from {from}, not from {}",
                    self.addr(v6)
                )));
            }
            got += 1;
        }
        Ok(got)
    }

    /// Starts a packet capture on `iface` of this host with a pcap `filter` ("" for all).
    pub fn capture(&self, iface: &str, filter: &str) -> io::Result<Capture> {
        Capture::start(self, iface, filter)
    }
}

/// A background process, killed (SIGKILL) if still running when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub(crate) fn from_child(child: Child) -> Self {
        Self { child: Some(child) }
    }

    fn take(&mut self) -> io::Result<Child> {
        self.child.take().ok_or_else(|| error("the process was already waited for"))
    }

    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal`, waits up to `grace` for the process to exit, SIGKILLs it if it has
    /// not, and returns its status and remaining output.
    pub fn stop(mut self, signal: nix::sys::signal::Signal, grace: Duration) -> io::Result<Output> {
        let mut child = self.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + grace;
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output()
    }

    /// Waits for the process to exit on its own.
    pub fn wait(mut self) -> io::Result<Output> {
        self.take()?.wait_with_output()
    }

    /// Whether the process has exited, and how.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait(),
            None => Err(error("the process was already waited for")),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
