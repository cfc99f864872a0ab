//! gridos: the bare-metal kernel of a peer-to-peer cloud node.
//!
//! Boot order: console, boot information, descriptor tables, clock, memory
//! (frames, page tables, heap), ACPI and interrupt controllers, timer, PCI,
//! userland, then the `gridos ready in <N> us` line and the idle loop.
#![no_std]
#![no_main]

extern crate alloc;

mod acpi;
mod arch;
mod bootinfo;
mod cmdline;
mod config;
mod console;
mod control;
mod disks;
mod drivers;
mod entropy;
mod executor;
mod metrics;
mod mm;
mod identity;
mod inventory;
mod ledger;
mod net;
mod overlay;
mod power;
mod screen;
mod selftest;
mod services;
mod shards;
mod storage;
mod storebench;
mod syscalls;
mod wasm;

use arch::x86_64::{apic, cpu, gdt, idt, interrupts, smp, time};
use bootinfo::{BootInfo, Protocol};
use cmdline::Cmdline;

const MIB: u64 = 1 << 20;

#[no_mangle]
extern "C" fn kmain(magic: u32, info: u32) -> ! {
    console::init();
    console::init_log(log::LevelFilter::Info);
    // SAFETY: the entry stub passes the loader's registers unchanged, and nothing
    // has reused loader memory yet.
    let boot = match unsafe { BootInfo::parse(magic, info) } {
        Ok(boot) => boot,
        Err(e) => {
            kprintln!("gridos: unusable boot information: {e:?}");
            power::fatal("no boot information")
        }
    };
    let cmdline = Cmdline::new(boot.cmdline());
    let test = cmdline.get("gridos.test");
    if test.is_some() {
        power::set_test_mode();
    }
    if let Some(level) = cmdline.get("gridos.log") {
        match console::parse_level(level) {
            Some(level) => console::init_log(level),
            None => log::warn!("gridos.log={level:?} is not a level (off, error, warn, info, debug, trace)"),
        }
    }
    gdt::init();
    idt::init();
    // Before anything detects CPU features (blake3 caches its choice on first use).
    // `gridos.avx=on|off`; by default on, except under QEMU's TCG, which emulates
    // AVX2 slower than SSE4.1 (blake3 25-35 vs 41-43 MB/s in store-bench).
    let avx = match cmdline.get("gridos.avx") {
        Some("on") => true,
        Some("off") => false,
        other => {
            if let Some(word) = other {
                log::warn!("gridos.avx={word:?} is not on or off; using the default");
            }
            !cpu::is_qemu_tcg()
        }
    };
    let vector_state = if avx { cpu::enable_extended_state() } else { cpu::VectorState::Sse };
    let tsc_hz = time::init();

    let protocol = match boot.protocol {
        Protocol::Multiboot2 => "Multiboot2",
        Protocol::Pvh => "PVH",
        Protocol::Multiboot1 => "Multiboot1",
    };
    log::info!("gridos {} booting via {} ({})", env!("CARGO_PKG_VERSION"), protocol, boot.loader_name());
    log::info!("cmdline: {:?}", cmdline.as_str());
    config::load(&cmdline);
    let mut brand = [0u8; 48];
    let features = cpu::features();
    log::info!("cpu: {}, TSC {}.{:03} MHz{}", cpu::brand(&mut brand), tsc_hz / 1_000_000, (tsc_hz / 1000) % 1000,
        if features.invariant_tsc { " (invariant)" } else { "" });
    log::debug!("cpu features: {features:?}");
    log::info!(
        "cpu: {vector_state:?} register state saved at interrupt entry{}; blake3 uses {}",
        if !avx { " (AVX off: gridos.avx, or the default under QEMU TCG)" } else { "" },
        storebench::blake3_simd()
    );

    let memory_bytes = init_memory(&boot, &cmdline);

    let cpu_count = match acpi::init(&boot) {
        Ok(m) => {
            log::info!("acpi: revision {}, {} CPUs enabled, {} I/O APICs, {} source overrides",
                m.acpi_revision, m.cpus_enabled, m.io_apics, m.source_overrides);
            m.cpus_enabled.max(1)
        }
        Err(e) => {
            log::warn!("acpi: tables not usable ({e:?}); running on the boot CPU with no I/O APIC");
            1
        }
    };
    let apic_id = apic::init_local();
    smp::init_bsp(apic_id);
    let apic_hz = time::start_tick();
    interrupts::enable();
    log::info!("apic: {}, local APIC id {apic_id}, timer {} kHz, tick {} Hz", apic::mode().name(), apic_hz / 1000, time::TICK_HZ);
    start_cpus(&boot, &cmdline, cpu_count);

    let devices = drivers::pci::enumerate();
    log::info!("pci: {} functions", devices.len());
    for d in &devices {
        log::info!("pci {} {:04x}:{:04x} class {:02x}.{:02x} {} {}", d.address, d.vendor_id, d.device_id,
            d.class, d.subclass, d.class_name(), d.device_name());
    }
    let machine = Machine { cpu_model: cpu::brand(&mut brand), cpu_count, memory_bytes };
    init_devices(&devices, &cmdline, &machine);

    let hello_status = hello::main();
    if hello_status != 0 {
        log::error!("userland hello exited with status {hello_status}");
    }

    log::info!("gridos ready in {} us", time::since_boot_us());
    log::info!("memory: idle: {}", mm::footprint(memory_bytes));
    if cmdline.get("gridos.screen") != Some("off") {
        screen::start();
    }

    if let Some(name) = test {
        let seed = cmdline.get_u64("gridos.seed").unwrap_or(1);
        selftest::run(name, &selftest::BootFacts { hello_status, seed, store_expect: cmdline.get_u64("gridos.store_expect") });
    }
    executor::run()
}

/// Starts the application processors (unless `gridos.smp=off`) and reports them.
fn start_cpus(boot: &BootInfo, cmdline: &Cmdline<'_>, cpus_in_madt: u32) {
    let enabled = match cmdline.get("gridos.smp") {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => {
            log::warn!("gridos.smp={other:?} is not on or off; SMP stays on");
            true
        }
    };
    smp::set_answer_bound_ms(cmdline.get_u64("gridos.smp.answer_ms").unwrap_or_else(smp::default_answer_bound_ms));
    match smp::start_aps(boot, enabled) {
        Ok(online) => log::info!("smp: {online} of {cpus_in_madt} CPUs online"),
        Err(smp::SmpError::OneCpu) => log::info!("smp: 1 CPU online"),
        Err(smp::SmpError::Disabled) => log::info!("smp: off (gridos.smp=off): 1 of {cpus_in_madt} CPUs online"),
        Err(e) => log::warn!("smp: application processors not started ({e:?}): 1 of {cpus_in_madt} CPUs online"),
    }
}

/// What boot learned of the machine before the devices, for the inventory.
struct Machine<'a> {
    cpu_model: &'a str,
    cpu_count: u32,
    memory_bytes: u64,
}

/// Starts the drivers: disks (virtio, NVMe, AHCI), then NICs, the inventory, the
/// network stack and services.
fn init_devices(devices: &[drivers::pci::PciDevice], cmdline: &Cmdline<'_>, machine: &Machine<'_>) {
    use virtio_drivers::transport::DeviceType;
    let mut disks = alloc::vec::Vec::new();
    let mut nics = alloc::vec::Vec::new();
    for found in drivers::virtio::probe(devices) {
        match found.device_type {
            DeviceType::Block => disks.push(found),
            DeviceType::Network => {
                let (address, source) = (found.address, found.source);
                match drivers::virtio_net::VirtioNic::new(found) {
                    Ok(mut nic) => {
                        if let Some(event) = drivers::virtio::move_to_msix(address, source) {
                            nic.event = event;
                            log::info!("nic at {address}: virtio-net, interrupts MSI-X");
                        }
                        nics.push((address, drivers::nic::NicDevice::Virtio(nic)))
                    }
                    Err(e) => log::warn!("nic at {address}: virtio-net init failed: {e}"),
                }
            }
            DeviceType::EntropySource => {
                let address = found.address;
                match virtio_drivers::device::rng::VirtIORng::new(found.transport) {
                    Ok(rng) => entropy::attach_virtio_rng(rng),
                    Err(e) => log::warn!("virtio {address}: virtio-rng init failed: {e}"),
                }
            }
            other => log::info!("virtio {}: {other:?} device, no driver", found.address),
        }
    }
    if power::test_mode() && cmdline.get("gridos.fault") == Some("e1000-tx-hang") {
        drivers::e1000::inject_tx_hang();
    }
    for d in devices {
        let Some(model) = drivers::e1000::Model::of(d) else { continue };
        match drivers::e1000::E1000Nic::new(d, model) {
            Ok(nic) => {
                log::info!("nic at {}: {}, interrupts {}, link {}", d.address, model.name(), nic.interrupts, nic.link().as_str());
                nics.push((d.address, drivers::nic::NicDevice::Intel(nic)));
            }
            Err(e) => log::warn!("nic at {}: {} not usable: {e}; left alone", d.address, model.name()),
        }
    }
    // eth0, eth1... in PCI order, whatever the kind.
    nics.sort_by_key(|(a, _)| (a.bus, a.device, a.function));
    let nics: alloc::vec::Vec<_> = nics.into_iter().map(|(_, nic)| nic).collect();
    entropy::init();
    disks::init(disks, devices);
    let nic_info = nics
        .iter()
        .enumerate()
        .map(|(i, nic)| inventory::NicInfo {
            name: alloc::format!("eth{i}"),
            model: nic.model(),
            mac: nic.mac(),
            link: nic.link(),
        })
        .collect();
    inventory::collect(machine.cpu_model, machine.cpu_count, machine.memory_bytes, devices, nic_info);
    let mut overlay_config = overlay::OverlayConfig::from_cmdline(cmdline);
    let ledger_config = ledger::from_cmdline(cmdline);
    // The validators are static overlay peers.
    for peer in ledger::overlay_peers(ledger_config.as_ref()) {
        if !overlay_config.peers.iter().any(|(k, _)| *k == peer.0) {
            overlay_config.peers.push(peer);
        }
    }
    // The identity (in the first disk's node area) before the stores, so that disks
    // formatted now carry the node's key.
    let identity = match overlay_config.enabled.then(|| identity::load_or_create(cmdline.get("gridos.format"))) {
        Some(Ok(identity)) => Some(identity),
        Some(Err(why)) => {
            log::error!("identity: refusing to create a node key: {why}; the node runs without the overlay");
            None
        }
        None => None,
    };
    let node_key = identity.map(|(seed, _)| ::overlay::identity::Identity::from_seed(seed).public_key().0);
    if let (Some(key), Some((_, origin))) = (node_key, identity) {
        log::info!("identity: node key {} ({origin:?})", overlay::hex(&key));
    }
    storage::init(cmdline, node_key);
    shards::init(cmdline);
    // The underlay answers nothing but the overlay unless asked to stay open.
    let underlay_open = match cmdline.get("gridos.underlay") {
        Some("open") => true,
        Some("closed") => false,
        _ => !overlay_config.enabled,
    };
    let filter = (!underlay_open).then_some(overlay_config.port);
    net::init(nics, &net::NetConfig::from_cmdline(cmdline), filter);
    let mut networks = alloc::vec::Vec::new();
    if underlay_open {
        networks.push(net::Network::Underlay);
    }
    if let (Some((seed, origin)), Some(node_key)) = (identity, node_key) {
        wasm::persist::init(origin);
        let origin = match origin {
            identity::Origin::Disk => "identity from disk",
            identity::Origin::Created => "new identity, saved to disk",
            identity::Origin::Ephemeral => "in-memory identity: no usable disk",
        };
        if let Some(address) = overlay::start(seed, origin, overlay_config) {
            networks.push(net::Network::Overlay);
            if cmdline.get("gridos.workloads") != Some("off") {
                control::start(node_key, address.octets());
            }
            if cmdline.get("gridos.metrics") != Some("off") {
                metrics::start(node_key);
            }
        }
    }
    ledger::start(ledger_config, identity.map(|(seed, _)| seed).zip(node_key));
    log::info!("net: underlay {}", if underlay_open { "open" } else { "closed: only the overlay port answers" });
    services::start(cmdline, &networks);
    if cmdline.get("gridos.workloads") != Some("off") {
        wasm::service::start();
    }
}

/// Sets up frames, paging and the heap; returns the usable RAM in bytes.
fn init_memory(boot: &BootInfo, cmdline: &Cmdline<'_>) -> u64 {
    let report = mm::frames::init(boot);
    if let Err(e) = mm::paging::init(report.highest_address) {
        log::error!("paging: could not map all RAM: {e:?}");
    }
    let ceiling = cmdline.get_u64("gridos.heap_mb").map(|mb| mb.saturating_mul(MIB));
    match mm::heap::init(report.usable_bytes, ceiling) {
        Some((base, size)) => {
            wasm::admission::set_heap_bytes(mm::heap::ceiling_bytes());
            log::info!(
                "memory: {} MiB usable RAM (highest address {:#x}), heap {} MiB at {:#x} growing on demand up to {} MiB, \
                 {} MiB free for frames ({} MiB kept from the heap for DMA and page tables)",
                report.usable_bytes / MIB, report.highest_address, size / MIB, base, mm::heap::ceiling_bytes() / MIB,
                mm::frames::free_bytes() / MIB, mm::heap::reserve_bytes() / MIB);
            report.usable_bytes
        }
        None => power::fatal("could not set up the kernel heap"),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    interrupts::disable();
    // SAFETY: the panic path never returns to the interrupted console writer.
    unsafe { console::force_unlock() };
    match info.location() {
        Some(l) => kprintln!("\nPANIC at {}:{}:{}: {}", l.file(), l.line(), l.column(), info.message()),
        None => kprintln!("\nPANIC: {}", info.message()),
    }
    let rbp: u64;
    // SAFETY: reads the frame-pointer register only.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags)) };
    idt::print_stack_walk(0, rbp);
    power::fatal("panic")
}
