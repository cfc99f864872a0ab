//! `gridctl overlay up|down`: this host joins the overlay as the user's key, through a TUN
//! interface, so that ordinary tools (`ping -6`, `curl`, `ssh`, `nc`, Prometheus) reach
//! overlay addresses directly.
//!
//! `up` (root: it creates a network interface) makes a TUN interface (default `gridos0`,
//! the overlay's MTU) with the user's overlay address as `fd67::/16`, so the host
//! routes the whole overlay prefix through it, and runs the daemon: the host overlay stack
//! ([`hostnet::Stack`] in packet mode) linked to the nodes named, carrying IPv6
//! packets between the interface and the overlay, sealed end to end. Packets from the
//! interface whose source is not the user's address are dropped (the overlay would refuse
//! them). The nodes are configured peers: when one restarts, the link goes down on silence
//! and the stack handshakes again every few seconds until it is back.
//!
//! By default `up` starts the daemon in the background (its own process group, output in
//! `RUN_DIR/overlay-NAME.log`, pid in `RUN_DIR/overlay-NAME.pid`), waits until a node is
//! linked, prints the interface, the address and the peers it links through, and returns;
//! `--foreground` runs the daemon in this process instead. The daemon prints a line each
//! time a peer links or leaves. `down` stops the daemon named by the pid file (SIGTERM);
//! the kernel removes a TUN interface, its address and its route when its last descriptor
//! closes.
//!
//! Bounds: the stack's packet queues (`hostnet::stack`); at most
//! [`TUN_READS_PER_ROUND_MAX`] packets read from the interface per round, so the
//! underlay is served in between.

use std::io::{self, Write};
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use overlay::node::Config;

use crate::key::UserKey;
use hostnet::stack::{PacketError, Stack, MTU_BYTES};
use crate::target::Target;
use crate::{bail, hex, Context, Error, Result};

/// Packets read from the TUN interface per round at most.
pub const TUN_READS_PER_ROUND_MAX: usize = 256;
/// Longest wait in the daemon's loop (link changes are looked at this often).
const WAIT_MAX: Duration = Duration::from_millis(500);
/// Default interface name.
pub const DEFAULT_NAME: &str = "gridos0";
/// Default directory of the pid and log files.
pub const DEFAULT_RUN_DIR: &str = "/run/gridctl";
/// Marks the daemon's line that says it is ready (the interface exists).
const READY_LINE: &str = "overlay up: interface ";
/// Marks a link line.
const LINKED_LINE: &str = "linked through ";

/// Where `up` keeps its files, and the interface name.
#[derive(Debug, Clone)]
pub struct Place {
    pub name: String,
    pub run_dir: PathBuf,
}

impl Place {
    fn pid_file(&self) -> PathBuf {
        self.run_dir.join(format!("overlay-{}.pid", self.name))
    }

    fn log_file(&self) -> PathBuf {
        self.run_dir.join(format!("overlay-{}.log", self.name))
    }

    fn check(&self) -> Result<()> {
        let ok = !self.name.is_empty()
            && self.name.len() < 16
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            bail!("{:?} is not an interface name (1 to 15 letters, digits, - or _)", self.name);
        }
        Ok(())
    }
}

fn need_root(what: &str) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("`gridctl overlay {what}` needs root (it manages a network interface); without root, `gridctl forward` carries one TCP port");
    }
    Ok(())
}

/// The pid in `place`'s pid file if that process is alive and is an overlay daemon (a
/// stale file's pid may have been reused by another program, which `down` must not kill).
fn running_pid(place: &Place) -> Option<i32> {
    let text = std::fs::read_to_string(place.pid_file()).ok()?;
    let pid = text.trim().parse::<i32>().ok()?;
    let alive = rustix::process::Pid::from_raw(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = ["overlay", "up", "--foreground"].iter().all(|w| words.contains(&w.as_bytes()))
        && match words.iter().position(|w| *w == b"--name") {
            Some(i) => words.get(i + 1) == Some(&place.name.as_bytes()),
            None => place.name == DEFAULT_NAME,
        };
    (alive && ours).then_some(pid)
}

/// `gridctl overlay up` in the background: starts `gridctl ... overlay up --foreground`
/// with the same arguments, waits (at most `timeout`) until a node is linked, and prints
/// what the daemon said.
pub fn up_detached(place: &Place, daemon_args: &[String], timeout: Duration, out: &mut dyn Write) -> Result<()> {
    place.check()?;
    need_root("up")?;
    if let Some(pid) = running_pid(place) {
        bail!("the overlay is already up on {} (daemon pid {pid}); `gridctl overlay down` first", place.name);
    }
    std::fs::create_dir_all(&place.run_dir).context(|| format!("cannot create {}", place.run_dir.display()))?;
    let log_path = place.log_file();
    let log = std::fs::File::create(&log_path).context(|| format!("cannot create {}", log_path.display()))?;
    let log_err = log.try_clone().context(|| "cannot duplicate the log file".into())?;
    let exe = std::env::current_exe().context(|| "cannot find the gridctl executable".into())?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(exe)
            .args(daemon_args)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .context(|| "cannot start the overlay daemon".into())?
    };
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains(READY_LINE) && text.contains(LINKED_LINE) {
            out.write_all(text.as_bytes()).context(|| "cannot write output".into())?;
            return writeln!(out, "daemon pid {}, log {}", child.id(), log_path.display()).context(|| "cannot write output".into());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the overlay daemon ended ({status}):\n{}", text.trim_end());
        }
        if Instant::now() >= deadline {
            if text.contains(READY_LINE) {
                // Up, not linked yet: it keeps trying in the background.
                out.write_all(text.as_bytes()).context(|| "cannot write output".into())?;
                return writeln!(out, "no node linked yet within {timeout:?}; the daemon (pid {}) keeps trying; log {}", child.id(),
                    log_path.display()).context(|| "cannot write output".into());
            }
            let _ = child.kill();
            let _ = child.wait();
            bail!("the overlay daemon did not start within {timeout:?}:\n{}", text.trim_end());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `gridctl overlay down`: stops the daemon (SIGTERM, then SIGKILL after 5 s).
pub fn down(place: &Place, out: &mut dyn Write) -> Result<()> {
    place.check()?;
    need_root("down")?;
    let Some(pid) = running_pid(place) else {
        let _ = std::fs::remove_file(place.pid_file());
        bail!("the overlay is not up on {} (no running daemon in {})", place.name, place.pid_file().display());
    };
    let target = rustix::process::Pid::from_raw(pid).ok_or_else(|| Error(format!("bad pid {pid}")))?;
    rustix::process::kill_process(target, rustix::process::Signal::TERM).context(|| format!("cannot stop the daemon (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while rustix::process::test_kill_process(target).is_ok() && is_alive_not_zombie(pid) {
        if Instant::now() >= deadline {
            let _ = rustix::process::kill_process(target, rustix::process::Signal::KILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(place.pid_file());
    writeln!(out, "overlay down: interface {} removed (daemon pid {pid} stopped)", place.name).context(|| "cannot write output".into())
}

/// False once `pid` is gone or a zombie (its interface is closed either way).
fn is_alive_not_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The daemon: makes the interface, links to `nodes`, carries packets until killed.
pub fn run_foreground(place: &Place, user: &UserKey, nodes: &[Target], local_port: u16, out: &mut dyn Write) -> Result<()> {
    place.check()?;
    need_root("up")?;
    if nodes.is_empty() {
        bail!("name at least one node to link through (KEY@HOST:PORT, or GRIDCTL_NODES)");
    }
    let address = Ipv6Addr::from(user.overlay_address());
    let tun = tun_rs::DeviceBuilder::new()
        .name(&place.name)
        .ipv6(address, overlay::address::PREFIX_LEN_BITS)
        .mtu(MTU_BYTES as u16)
        .build_sync()
        .context(|| format!("cannot create the TUN interface {} (is /dev/net/tun there?)", place.name))?;
    tun.set_nonblocking(true).context(|| "cannot make the TUN interface non-blocking".into())?;
    let bind: SocketAddr = if nodes[0].endpoint.is_ipv6() { "[::]" } else { "0.0.0.0" }
        .parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, local_port))
        .map_err(|_| Error("bad bind address".into()))?;
    let socket = UdpSocket::bind(bind).context(|| format!("cannot open UDP {bind}"))?;
    let config = Config { accept_unknown_peers: false, ..Config::default() };
    let mut stack = Stack::new(user.seed(), socket, config).context(|| "cannot start the overlay".into())?;
    stack.deliver_packets_to_host();
    for node in nodes {
        stack.add_peer(node.endpoint, node.key).map_err(|e| Error(format!("peer {}: {e:?}", hex(&node.key))))?;
    }
    std::fs::create_dir_all(&place.run_dir).context(|| format!("cannot create {}", place.run_dir.display()))?;
    std::fs::write(place.pid_file(), format!("{}\n", std::process::id())).context(|| format!("cannot write {}", place.pid_file().display()))?;
    let say = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(out, format!(
        "{READY_LINE}{}, address {address}, route {}/{} (MTU {MTU_BYTES}); linking to {}",
        place.name,
        Ipv6Addr::from(u128::from(u16::from_be_bytes(overlay::address::PREFIX)) << 112),
        overlay::address::PREFIX_LEN_BITS,
        nodes.iter().map(|n| format!("{}@{}", hex(&n.key), n.endpoint)).collect::<Vec<_>>().join(", ")
    ));
    let result = carry(&mut stack, &tun, nodes, out, &say);
    let _ = std::fs::remove_file(place.pid_file());
    result
}

/// The daemon's loop.
fn carry(stack: &mut Stack, tun: &tun_rs::SyncDevice, nodes: &[Target], out: &mut dyn Write,
    say: &dyn Fn(&mut dyn Write, String)) -> Result<()> {
    let mut buf = vec![0u8; MTU_BYTES + 256];
    let mut linked: Vec<[u8; 32]> = Vec::new();
    let mut refused = Refusals::default();
    let mut last_look = Instant::now() - WAIT_MAX;
    loop {
        stack.poll(Duration::ZERO).context(|| "overlay".into())?;
        let mut moved = 0;
        while let Some(packet) = stack.take_packet() {
            // A full interface queue loses the packet, as a link would.
            let _ = tun.send(&packet);
            moved += 1;
        }
        for _ in 0..TUN_READS_PER_ROUND_MAX {
            match tun.recv(&mut buf) {
                Ok(n) => {
                    moved += 1;
                    if let Err(e) = stack.send_packet(&buf[..n]) {
                        refused.count(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => break,
                Err(e) => return Err(Error(format!("reading the TUN interface: {e}"))),
            }
        }
        if last_look.elapsed() >= WAIT_MAX {
            last_look = Instant::now();
            report_links(stack, nodes, &mut linked, out, say);
            if let Some(line) = refused.report() {
                say(out, line);
            }
        }
        if moved == 0 {
            let wait = stack.idle_for(WAIT_MAX);
            wait_readable(stack.underlay_socket(), tun, wait)?;
        }
    }
}

/// Prints the peers that linked or left since the last look.
fn report_links(stack: &Stack, nodes: &[Target], linked: &mut Vec<[u8; 32]>, out: &mut dyn Write,
    say: &dyn Fn(&mut dyn Write, String)) {
    let now: Vec<(overlay::Address, [u8; 32])> = stack.linked_peers();
    for (address, key) in &now {
        if !linked.contains(key) {
            let endpoint = nodes.iter().find(|n| n.key == *key).map_or_else(String::new, |n| format!(" at {}", n.endpoint));
            say(out, format!("{LINKED_LINE}{}{endpoint} (overlay {})", hex(key), Ipv6Addr::from(address.0)));
        }
    }
    for key in linked.iter() {
        if !now.iter().any(|(_, k)| k == key) {
            say(out, format!("link to {} down; retrying", hex(key)));
        }
    }
    *linked = now.into_iter().map(|(_, k)| k).collect();
}

/// Waits until the socket or the interface is readable, at most `wait`.
fn wait_readable(socket: &UdpSocket, tun: &tun_rs::SyncDevice, wait: Duration) -> Result<()> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::os::fd::AsFd;
    let (socket_fd, tun_fd) = (socket.as_fd(), tun.as_fd());
    let mut fds = [PollFd::new(&socket_fd, PollFlags::IN), PollFd::new(&tun_fd, PollFlags::IN)];
    let timeout = Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
    match poll(&mut fds, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(Error(format!("poll: {e}"))),
    }
}

/// Packets from the interface the overlay did not take, counted and reported at most once
/// per look (a flood of them is one line).
#[derive(Default)]
struct Refusals {
    no_route: u64,
    foreign_source: u64,
    other: u64,
}

impl Refusals {
    fn count(&mut self, e: PacketError) {
        match e {
            PacketError::Overlay(overlay::NodeError::NoRoute) => self.no_route += 1,
            // Link-local and multicast traffic the host sends on any interface, and
            // packets from another source: not the overlay's.
            PacketError::ForeignSource | PacketError::NotIpv6 | PacketError::Overlay(overlay::NodeError::NotOverlayAddress) => {
                self.foreign_source += 1
            }
            PacketError::Overlay(_) => self.other += 1,
        }
    }

    fn report(&mut self) -> Option<String> {
        let line = (self.no_route > 0 || self.other > 0)
            .then(|| format!("dropped {} packets with no route yet, {} refused by the overlay", self.no_route, self.other));
        *self = Refusals::default();
        line
    }
}

/// The arguments `up` gives the background daemon.
pub fn daemon_args(key: &Path, timeout_secs: u64, place: &Place, nodes: &[String], local_port: u16) -> Vec<String> {
    let mut args = vec![
        "--key".to_string(),
        key.display().to_string(),
        "--timeout".to_string(),
        timeout_secs.to_string(),
        "overlay".to_string(),
        "up".to_string(),
        "--foreground".to_string(),
        "--name".to_string(),
        place.name.clone(),
        "--run-dir".to_string(),
        place.run_dir.display().to_string(),
        "--port".to_string(),
        local_port.to_string(),
    ];
    args.extend(nodes.iter().cloned());
    args
}

#[cfg(test)]
mod test {
    use super::*;

    fn place(name: &str) -> Place {
        Place { name: name.to_string(), run_dir: PathBuf::from("/run/gridctl") }
    }

    /// The name becomes an interface name and part of file paths: nothing else gets in.
    #[test]
    fn interface_names_are_checked() {
        for good in ["gridos0", "g", "grid-os_1", "abcdefghijklmno"] {
            assert!(place(good).check().is_ok(), "{good}");
        }
        for bad in ["", "../etc", "a/b", "gridos 0", "abcdefghijklmnop", "grid\0"] {
            assert!(place(bad).check().is_err(), "{bad:?}");
        }
        assert_eq!(place("gridos0").pid_file(), PathBuf::from("/run/gridctl/overlay-gridos0.pid"));
    }

    #[test]
    fn the_daemon_gets_the_same_choices() {
        let args = daemon_args(Path::new("/k"), 30, &place("g0"), &["KEY@h:1".to_string()], 7000);
        let line = args.join(" ");
        assert_eq!(line, "--key /k --timeout 30 overlay up --foreground --name g0 --run-dir /run/gridctl --port 7000 KEY@h:1");
    }

    /// Traffic the host sends on every interface (link-local, multicast) is not reported as
    /// refused; missing routes and overlay refusals are, once per look.
    #[test]
    fn refusals_are_summed_per_look() {
        let mut r = Refusals::default();
        r.count(PacketError::ForeignSource);
        r.count(PacketError::Overlay(overlay::NodeError::NotOverlayAddress));
        assert_eq!(r.report(), None);
        r.count(PacketError::Overlay(overlay::NodeError::NoRoute));
        r.count(PacketError::Overlay(overlay::NodeError::NoRoute));
        r.count(PacketError::Overlay(overlay::NodeError::PacketTooLarge));
        assert_eq!(r.report().as_deref(), Some("dropped 2 packets with no route yet, 1 refused by the overlay"));
        assert_eq!(r.report(), None);
    }
}
