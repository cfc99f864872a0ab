//! The node's figures ([`NodeMetrics`], plain data the kernel fills) and their rendering
//! as Prometheus families. Every name starts with `gridos_`; units are in the names
//! (`_bytes`, `_seconds`), counters end in `_total`, and disks, NICs and workloads are
//! labels (`disk`, `nic`, `workload_id`/`name`/`owner`).

use alloc::string::String;
use alloc::vec::Vec;

use crate::text::{Kind, Writer};

/// A family rendered from one field per labelled item: (name, help, the field).
type Field<T> = (&'static str, &'static str, fn(&T) -> u64);

/// One data disk of the shard store.
#[derive(Debug, Clone, Default)]
pub struct DiskMetrics {
    pub name: String,
    /// `mounted`, `formatted`, `failed`, ... (the kernel's word).
    pub state: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    /// Payload bytes of live shards.
    pub live_bytes: u64,
    pub shards: u64,
    /// Requests the store sent to the disk.
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// Requests the disk failed.
    pub errors: u64,
}

/// One NIC's counters (what the driver counts).
#[derive(Debug, Clone, Default)]
pub struct NicMetrics {
    pub name: String,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    /// Frames the underlay filter dropped.
    pub rx_filtered: u64,
}

/// One workload.
#[derive(Debug, Clone, Default)]
pub struct WorkloadMetrics {
    pub id: u64,
    pub name: String,
    /// The owner's key, hex (the first 16 digits are enough to tell owners apart).
    pub owner: String,
    /// `running`, `ready`, `exited`, `failed`, `stopped`.
    pub state: String,
    pub cpu_ms: u64,
    /// Bytes of log kept (charged to the workload).
    pub log_bytes: u64,
    /// Log lines written since it started.
    pub log_lines: u64,
    /// Linear memory it holds now (0 once it has finished).
    pub memory_bytes: u64,
    /// The most linear memory it held.
    pub memory_peak_bytes: u64,
    /// Its memory cap (from its manifest).
    pub memory_limit_bytes: u64,
}

/// The overlay's counters.
#[derive(Debug, Clone, Default)]
pub struct OverlayMetrics {
    /// Peers linked directly (handshake done).
    pub peers_direct: u64,
    /// Destinations with a route (direct or through a peer).
    pub routes: u64,
    pub handshakes_initiated: u64,
    pub handshakes_completed: u64,
    pub forwarded_packets: u64,
    pub delivered_packets: u64,
    /// Dropped packets by reason (label `reason`).
    pub dropped: Vec<(&'static str, u64)>,
}

/// The control service's counters.
#[derive(Debug, Clone, Default)]
pub struct ServiceMetrics {
    pub connections: u64,
    /// Connections reset at once by the per-peer or node-wide bound.
    pub connections_refused: u64,
    pub requests: u64,
    /// Requests answered with an error (refused, not found, no space...).
    pub requests_refused: u64,
}

/// The ledger client's figures (a node on a ledger; none in development mode).
#[derive(Debug, Clone, Default)]
pub struct LedgerMetrics {
    /// Height of the last block the node's light client accepted.
    pub height: u64,
    /// The billing period of that block.
    pub period: u64,
    /// The last period the node's uptime report landed in.
    pub last_uptime_period: Option<u64>,
    /// Storage proofs the node sent that the ledger accepted, and those it could not make.
    pub proofs_ok: u64,
    pub proofs_failed: u64,
    /// Validator connections up now.
    pub validators_connected: u64,
    /// Validator connections dropped for a refused frame (size, kind, encoding, buffers).
    pub refused_frames: u64,
}

/// Everything `/metrics` shows.
#[derive(Debug, Clone, Default)]
pub struct NodeMetrics {
    pub version: String,
    /// The node's overlay key, hex.
    pub node_key: String,
    pub uptime_ms: u64,
    pub cpus: u64,
    /// Time the CPU was halted with nothing to run, since boot.
    pub cpu_idle_ms: u64,
    pub heap_size_bytes: u64,
    pub heap_used_bytes: u64,
    pub frames_free_bytes: u64,
    pub disks: Vec<DiskMetrics>,
    pub store_owners: u64,
    pub nics: Vec<NicMetrics>,
    pub workloads: Vec<WorkloadMetrics>,
    pub overlay: Option<OverlayMetrics>,
    pub ledger: Option<LedgerMetrics>,
    pub control: ServiceMetrics,
    /// The metrics service itself (requests are scrapes).
    pub metrics: ServiceMetrics,
}

impl NodeMetrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        let mut w = Writer::new();
        w.family("gridos_build_info", Kind::Gauge, "Always 1; the labels name the node and its software.");
        w.sample("gridos_build_info", &[("version", &self.version), ("node_key", &self.node_key)], 1);
        w.family("gridos_uptime_seconds", Kind::Gauge, "Time since the node booted.");
        w.sample_milli("gridos_uptime_seconds", &[], self.uptime_ms);
        w.single("gridos_cpus", Kind::Gauge, "CPUs the node runs on.", self.cpus);
        w.family("gridos_cpu_seconds_total", Kind::Counter, "CPU time since boot, by mode (idle: halted with nothing to run).");
        w.sample_milli("gridos_cpu_seconds_total", &[("mode", "busy")], self.uptime_ms.saturating_sub(self.cpu_idle_ms));
        w.sample_milli("gridos_cpu_seconds_total", &[("mode", "idle")], self.cpu_idle_ms.min(self.uptime_ms));
        w.single("gridos_heap_size_bytes", Kind::Gauge, "Size of the kernel heap.", self.heap_size_bytes);
        w.single("gridos_heap_used_bytes", Kind::Gauge, "Bytes allocated from the kernel heap.", self.heap_used_bytes);
        w.single("gridos_heap_free_bytes", Kind::Gauge, "Bytes of the kernel heap not allocated.",
            self.heap_size_bytes.saturating_sub(self.heap_used_bytes));
        w.single("gridos_frames_free_bytes", Kind::Gauge, "Physical memory outside the heap still free.", self.frames_free_bytes);
        self.render_disks(&mut w);
        self.render_nics(&mut w);
        self.render_workloads(&mut w);
        self.render_overlay(&mut w);
        self.render_ledger(&mut w);
        render_service(&mut w, "control", "control protocol", &self.control);
        render_service(&mut w, "metrics", "metrics endpoint", &self.metrics);
        w.finish()
    }

    fn render_disks(&self, w: &mut Writer) {
        w.family("gridos_disk_up", Kind::Gauge, "1 if the disk's shard store serves, 0 if not; label state says why.");
        for d in &self.disks {
            let up = u64::from(d.state != "failed" && d.capacity_bytes > 0);
            w.sample("gridos_disk_up", &[("disk", &d.name), ("state", &d.state)], up);
        }
        let gauges: [Field<DiskMetrics>; 5] = [
            ("gridos_store_capacity_bytes", "Bytes of the disk's shard store log.", |d| d.capacity_bytes),
            ("gridos_store_used_bytes", "Bytes of the store log in use (live and not yet reclaimed).", |d| d.used_bytes),
            ("gridos_store_free_bytes", "Bytes new shards may still use.", |d| d.free_bytes),
            ("gridos_store_live_bytes", "Payload bytes of live shards.", |d| d.live_bytes),
            ("gridos_store_shards", "Live shards on the disk.", |d| d.shards),
        ];
        for (name, help, value) in gauges {
            w.family(name, Kind::Gauge, help);
            for d in &self.disks {
                w.sample(name, &[("disk", &d.name)], value(d));
            }
        }
        w.single("gridos_store_owners", Kind::Gauge, "Owners holding shards on the node.", self.store_owners);
        let counters: [Field<DiskMetrics>; 5] = [
            ("gridos_disk_reads_total", "Read requests the shard store sent to the disk.", |d| d.reads),
            ("gridos_disk_writes_total", "Write requests the shard store sent to the disk.", |d| d.writes),
            ("gridos_disk_read_bytes_total", "Bytes the shard store read from the disk.", |d| d.read_bytes),
            ("gridos_disk_written_bytes_total", "Bytes the shard store wrote to the disk.", |d| d.written_bytes),
            ("gridos_disk_errors_total", "Requests the disk failed.", |d| d.errors),
        ];
        for (name, help, value) in counters {
            w.family(name, Kind::Counter, help);
            for d in &self.disks {
                w.sample(name, &[("disk", &d.name)], value(d));
            }
        }
    }

    fn render_nics(&self, w: &mut Writer) {
        let counters: [Field<NicMetrics>; 6] = [
            ("gridos_nic_receive_frames_total", "Frames received.", |n| n.rx_frames),
            ("gridos_nic_transmit_frames_total", "Frames sent.", |n| n.tx_frames),
            ("gridos_nic_receive_bytes_total", "Bytes received (frames without the virtio header).", |n| n.rx_bytes),
            ("gridos_nic_transmit_bytes_total", "Bytes sent.", |n| n.tx_bytes),
            ("gridos_nic_transmit_errors_total", "Frames the device refused.", |n| n.tx_errors),
            ("gridos_nic_receive_filtered_total", "Frames the underlay filter dropped.", |n| n.rx_filtered),
        ];
        for (name, help, value) in counters {
            w.family(name, Kind::Counter, help);
            for n in &self.nics {
                w.sample(name, &[("nic", &n.name)], value(n));
            }
        }
    }

    fn render_workloads(&self, w: &mut Writer) {
        w.family("gridos_workloads", Kind::Gauge, "Workloads deployed on the node, by state.");
        for state in ["ready", "running", "exited", "failed", "stopped"] {
            let n = self.workloads.iter().filter(|x| x.state == state).count() as u64;
            w.sample("gridos_workloads", &[("state", state)], n);
        }
        let ids: Vec<String> = self.workloads.iter().map(|x| alloc::format!("{}", x.id)).collect();
        w.family("gridos_workload_info", Kind::Gauge, "Always 1 per workload; the labels describe it.");
        for (x, id) in self.workloads.iter().zip(&ids) {
            w.sample("gridos_workload_info", &[("workload_id", id), ("name", &x.name), ("owner", &x.owner), ("state", &x.state)], 1);
        }
        w.family("gridos_workload_cpu_seconds_total", Kind::Counter, "CPU time the workload used since the node booted.");
        for (x, id) in self.workloads.iter().zip(&ids) {
            w.sample_milli("gridos_workload_cpu_seconds_total", &[("workload_id", id), ("name", &x.name)], x.cpu_ms);
        }
        let per: [(Kind, Field<WorkloadMetrics>); 5] = [
            (Kind::Gauge, ("gridos_workload_memory_bytes", "Linear memory the workload holds (0 once it has finished).", |x| x.memory_bytes)),
            (Kind::Gauge, ("gridos_workload_memory_peak_bytes", "The most linear memory the workload held.", |x| x.memory_peak_bytes)),
            (Kind::Gauge, ("gridos_workload_memory_limit_bytes", "The workload's memory cap.", |x| x.memory_limit_bytes)),
            (Kind::Gauge, ("gridos_workload_log_bytes", "Bytes of the workload's log the node keeps.", |x| x.log_bytes)),
            (Kind::Counter, ("gridos_workload_log_lines_total", "Log lines the workload wrote since it started.", |x| x.log_lines)),
        ];
        for (kind, (name, help, value)) in per {
            w.family(name, kind, help);
            for (x, id) in self.workloads.iter().zip(&ids) {
                w.sample(name, &[("workload_id", id), ("name", &x.name)], value(x));
            }
        }
    }

    fn render_ledger(&self, w: &mut Writer) {
        let Some(l) = &self.ledger else { return };
        w.single("gridos_ledger_height", Kind::Gauge, "Height of the last ledger block the node's light client accepted.", l.height);
        w.single("gridos_ledger_period", Kind::Gauge, "Billing period of that block.", l.period);
        if let Some(p) = l.last_uptime_period {
            w.single("gridos_ledger_last_uptime_period", Kind::Gauge, "Last billing period the node's uptime report landed in.", p);
        }
        w.family("gridos_ledger_proofs_total", Kind::Counter, "Storage proofs: accepted by the ledger (ok) or not made (failed).");
        w.sample("gridos_ledger_proofs_total", &[("result", "ok")], l.proofs_ok);
        w.sample("gridos_ledger_proofs_total", &[("result", "failed")], l.proofs_failed);
        w.single("gridos_ledger_validators_connected", Kind::Gauge, "Validator connections up.", l.validators_connected);
        w.single("gridos_ledger_refused_frames_total", Kind::Counter, "Validator connections dropped for a refused frame.", l.refused_frames);
    }

    fn render_overlay(&self, w: &mut Writer) {
        let Some(o) = &self.overlay else { return };
        w.single("gridos_overlay_peers", Kind::Gauge, "Overlay peers linked directly.", o.peers_direct);
        w.single("gridos_overlay_routes", Kind::Gauge, "Overlay destinations with a route.", o.routes);
        w.single("gridos_overlay_handshakes_initiated_total", Kind::Counter, "Handshake initiations sent.", o.handshakes_initiated);
        w.single("gridos_overlay_handshakes_completed_total", Kind::Counter, "Handshakes that gave a session.", o.handshakes_completed);
        w.single("gridos_overlay_forwarded_packets_total", Kind::Counter, "Packets forwarded for other nodes.", o.forwarded_packets);
        w.single("gridos_overlay_delivered_packets_total", Kind::Counter, "Packets delivered to this node.", o.delivered_packets);
        w.family("gridos_overlay_dropped_packets_total", Kind::Counter, "Packets the overlay dropped, by reason.");
        for (reason, n) in &o.dropped {
            w.sample("gridos_overlay_dropped_packets_total", &[("reason", reason)], *n);
        }
    }
}

fn render_service(w: &mut Writer, service: &str, what: &str, m: &ServiceMetrics) {
    let name = |suffix: &str| alloc::format!("gridos_{service}_{suffix}");
    let rows = [
        ("connections_total", alloc::format!("Connections to the {what}."), m.connections),
        ("connections_refused_total", alloc::format!("Connections to the {what} refused by its connection bounds."), m.connections_refused),
        ("requests_total", alloc::format!("Requests to the {what}."), m.requests),
        ("requests_refused_total", alloc::format!("Requests to the {what} answered with an error."), m.requests_refused),
    ];
    for (suffix, help, value) in rows {
        w.single(&name(suffix), Kind::Counter, &help, value);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::vec;

    fn sample() -> NodeMetrics {
        NodeMetrics {
            version: "0.1.0".into(),
            node_key: "ab".into(),
            uptime_ms: 61_500,
            cpus: 1,
            cpu_idle_ms: 60_000,
            heap_size_bytes: 1000,
            heap_used_bytes: 400,
            frames_free_bytes: 5,
            disks: vec![DiskMetrics { name: "vda".into(), state: "mounted".into(), capacity_bytes: 100, used_bytes: 10, free_bytes: 90, live_bytes: 8, shards: 2, writes: 3, written_bytes: 1536, ..DiskMetrics::default() }],
            store_owners: 1,
            nics: vec![NicMetrics { name: "eth0".into(), rx_frames: 3, tx_frames: 4, ..NicMetrics::default() }],
            workloads: vec![WorkloadMetrics { id: 7, name: "hello \"x\"".into(), owner: "00ff".into(), state: "exited".into(), cpu_ms: 1234, log_bytes: 99, log_lines: 5, memory_bytes: 131072, memory_peak_bytes: 131072, memory_limit_bytes: 1 << 20 }],
            overlay: Some(OverlayMetrics { peers_direct: 2, routes: 3, dropped: vec![("replay", 4)], ..OverlayMetrics::default() }),
            ledger: Some(LedgerMetrics { height: 42, period: 7, last_uptime_period: Some(6), proofs_ok: 5, proofs_failed: 1, ..LedgerMetrics::default() }),
            control: ServiceMetrics { connections: 1, requests: 9, requests_refused: 2, ..ServiceMetrics::default() },
            metrics: ServiceMetrics::default(),
        }
    }

    #[test]
    fn renders_the_series_with_conventional_names() {
        let text = sample().render();
        for line in [
            "gridos_uptime_seconds 61.500",
            "gridos_heap_free_bytes 600",
            "gridos_store_shards{disk=\"vda\"} 2",
            "gridos_disk_up{disk=\"vda\",state=\"mounted\"} 1",
            "gridos_nic_transmit_frames_total{nic=\"eth0\"} 4",
            "gridos_workloads{state=\"exited\"} 1",
            "gridos_workload_cpu_seconds_total{workload_id=\"7\",name=\"hello \\\"x\\\"\"} 1.234",
            "gridos_workload_log_bytes{workload_id=\"7\",name=\"hello \\\"x\\\"\"} 99",
            "gridos_workload_memory_bytes{workload_id=\"7\",name=\"hello \\\"x\\\"\"} 131072",
            "gridos_workload_memory_limit_bytes{workload_id=\"7\",name=\"hello \\\"x\\\"\"} 1048576",
            "gridos_cpu_seconds_total{mode=\"busy\"} 1.500",
            "gridos_cpu_seconds_total{mode=\"idle\"} 60.000",
            "gridos_disk_written_bytes_total{disk=\"vda\"} 1536",
            "gridos_disk_reads_total{disk=\"vda\"} 0",
            "gridos_overlay_peers 2",
            "gridos_ledger_height 42",
            "gridos_ledger_last_uptime_period 6",
            "gridos_ledger_proofs_total{result=\"ok\"} 5",
            "gridos_ledger_proofs_total{result=\"failed\"} 1",
            "gridos_overlay_dropped_packets_total{reason=\"replay\"} 4",
            "gridos_control_requests_total 9",
            "gridos_control_requests_refused_total 2",
            "# TYPE gridos_metrics_requests_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    /// Every family is declared once, before its samples; every sample belongs to the
    /// family declared last; counters end in `_total`.
    #[test]
    fn the_exposition_is_well_formed() {
        let text = sample().render();
        let mut declared: Vec<&str> = Vec::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type line");
                assert!(!declared.contains(&name), "{name} declared twice");
                assert!(kind != "counter" || name.ends_with("_total"), "{name}");
                assert!(crate::text::valid_name(name));
                declared.push(name);
                current = name;
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().expect("name");
                assert_eq!(name, current, "{line}");
                let value = line.rsplit(' ').next().expect("value");
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert!(declared.len() > 30, "{}", declared.len());
    }

    /// The Grafana dashboard in the repository asks only for series the node renders.
    #[test]
    fn the_dashboard_names_only_rendered_series() {
        let dashboard = include_str!("../../../ops/grafana/gridos-node.json");
        let text = sample().render();
        let mut checked = 0;
        for (i, _) in dashboard.match_indices("gridos_") {
            let name: String = dashboard[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if name == "gridos_" {
                continue;
            }
            assert!(text.contains(&alloc::format!("# TYPE {name} ")), "the dashboard names {name}, which the node does not render");
            checked += 1;
        }
        assert!(checked >= 15, "{checked}");
    }

    #[test]
    fn development_mode_has_no_ledger_series() {
        let m = NodeMetrics { ledger: None, ..sample() };
        assert!(!m.render().contains("gridos_ledger_"));
        let m = NodeMetrics { ledger: Some(LedgerMetrics::default()), ..sample() };
        let text = m.render();
        assert!(text.contains("gridos_ledger_height 0") && !text.contains("gridos_ledger_last_uptime_period"), "{text}");
    }

    #[test]
    fn no_overlay_no_overlay_series() {
        let m = NodeMetrics { overlay: None, ..NodeMetrics::default() };
        assert!(!m.render().contains("gridos_overlay_"));
    }
}
