//! The serial console's status screen: once the node is up, one clear screen with its
//! identity, overlay address, farm, disks, NICs and overlay peers, then the log goes on
//! below it.
//!
//! The screen is redrawn (cleared again) when what it shows changes: a DHCP lease, a disk
//! failing, a peer linking or leaving; at most every [`REDRAW_MS_MIN`], so a busy grid
//! does not bury the log. It is written to the serial port directly, not through the
//! log (it is not a log line and is not in the kernel's log ring), line by line so no
//! write holds interrupts off for long. `gridos.screen=off` leaves it out. The figures
//! come from the services' own tables; this module only lays them out.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::executor;

/// How often the screen's content is compared with what it last showed.
const CHECK_MS: u64 = 2_000;
/// Least time between two redraws.
pub const REDRAW_MS_MIN: u64 = 30_000;
/// Peers named on the screen; more are counted.
const PEERS_SHOWN_MAX: usize = 8;
/// The screen's width in columns.
const WIDTH: usize = 78;

/// ANSI: clear the screen and move the cursor home.
const CLEAR: &str = "\x1b[2J\x1b[H";

/// Starts the screen task (draws at once, then watches for changes).
pub fn start() {
    executor::spawn("screen", run());
}

async fn run() {
    let mut shown = String::new();
    let mut drawn_ms: Option<u64> = None;
    loop {
        let now_ms = executor::now_ns() / 1_000_000;
        let body = body();
        let due = drawn_ms.is_none_or(|at| now_ms.saturating_sub(at) >= REDRAW_MS_MIN);
        if body != shown && due {
            draw(&body, now_ms);
            shown = body;
            drawn_ms = Some(now_ms);
        }
        executor::sleep_ms(CHECK_MS).await;
    }
}

fn draw(body: &str, now_ms: u64) {
    crate::console::write_bytes(CLEAR.as_bytes());
    let title = format!(" gridos {} ", env!("CARGO_PKG_VERSION"));
    let side = WIDTH.saturating_sub(title.len()) / 2;
    let rule = "=".repeat(WIDTH);
    crate::console::write_bytes(format!("{}{title}{}\n", "=".repeat(side), "=".repeat(WIDTH - side - title.len())).as_bytes());
    for line in body.lines() {
        crate::console::write_bytes(format!(" {line}\n").as_bytes());
    }
    let footer = format!(
        " node up {}.{:01} s; the log follows (this screen is redrawn when it changes)\n{rule}\n",
        now_ms / 1000,
        (now_ms % 1000) / 100
    );
    crate::console::write_bytes(footer.as_bytes());
}

/// The screen's lines, without the title and uptime (so that only real changes redraw).
fn body() -> String {
    let mut out = String::new();
    let mut row = |label: &str, value: &str| out.push_str(&format!("{label:<10} {value}\n"));
    match crate::overlay::IDENTITY.get() {
        Some((key, address, port)) => {
            row("node key", &crate::overlay::hex(key));
            let address = smoltcp::wire::Ipv6Address::from_octets(*address);
            row("overlay", &format!("{address} (udp {port}; metrics on tcp {})", metrics::PORT));
        }
        None => row("overlay", "off (no identity or no NIC)"),
    }
    let (role, farm) = crate::config::role_and_farm();
    let farm = farm.map_or_else(|| String::from("none"), |f| format!("{f}"));
    let farmer = crate::config::farmer().map_or_else(|| String::from("none"), |k| crate::overlay::hex(&k[..8]));
    row("farm", &format!("{farm}, role {}, farmer key {farmer}", role.as_str()));
    row("ledger", &crate::ledger::screen_line());
    let disks = crate::storage::disks();
    if disks.is_empty() {
        row("disks", "none");
    }
    for (i, d) in disks.iter().enumerate() {
        let state = format!("{:?}", d.state).to_lowercase();
        let text = format!(
            "{} {state}: {} MiB, {} MiB free, {} shards",
            d.name,
            d.stat.capacity_bytes >> 20,
            d.stat.free_bytes >> 20,
            d.stat.shard_count
        );
        row(if i == 0 { "disks" } else { "" }, &text);
    }
    let nics = crate::net::nic_addresses();
    if nics.is_empty() {
        row("nics", "none");
    }
    for (i, (name, m, addresses)) in nics.iter().enumerate() {
        let addresses: Vec<String> = addresses.iter().map(|a| format!("{a}")).collect();
        let text = format!(
            "{name} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} {}",
            m[0], m[1], m[2], m[3], m[4], m[5],
            addresses.join(" ")
        );
        row(if i == 0 { "nics" } else { "" }, &text);
    }
    let routes = crate::overlay::ROUTES.lock().clone();
    let direct: Vec<_> = routes.iter().filter(|r| r.direct).collect();
    let through = routes.len() - direct.len();
    row("peers", &format!("{} linked directly, {through} reached through them", direct.len()));
    for peer in direct.iter().take(PEERS_SHOWN_MAX) {
        let address = smoltcp::wire::Ipv6Address::from_octets(peer.address);
        let key = peer.key.map_or_else(String::new, |k| format!(" key {}", crate::overlay::hex(&k[..8])));
        row("", &format!("{address}{key}"));
    }
    if direct.len() > PEERS_SHOWN_MAX {
        row("", &format!("and {} more", direct.len() - PEERS_SHOWN_MAX));
    }
    out
}
