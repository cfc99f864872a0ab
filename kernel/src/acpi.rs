//! ACPI: locate the tables from the RSDP and read the MADT (CPUs, from Processor Local
//! APIC entries (type 0, 8-bit ids) and Processor Local x2APIC entries (type 9, 32-bit
//! ids, as the `acpi` crate parses them), which it hands to `arch::x86_64::smp`; I/O
//! APICs; interrupt source overrides).

use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};

use crate::arch::x86_64::apic;
use crate::bootinfo::BootInfo;

#[derive(Clone, Copy)]
struct IdentityMap;

impl AcpiHandler for IdentityMap {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        assert!(
            crate::mm::is_identity_mapped(physical_address as u64, size as u64),
            "ACPI table at {physical_address:#x} outside mapped memory"
        );
        let ptr = NonNull::new(physical_address as *mut T).expect("ACPI table at address 0");
        // SAFETY: memory is identity-mapped (checked above); the acpi crate validates contents.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// What the MADT says about the machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct MachineInfo {
    pub cpus_enabled: u32,
    pub io_apics: u32,
    pub source_overrides: u32,
    pub acpi_revision: u8,
}

/// Why ACPI could not be read.
#[derive(Debug)]
pub enum AcpiInitError {
    Tables(#[allow(dead_code)] acpi::AcpiError),
}

/// Finds the ACPI tables and registers the I/O APICs with the interrupt code.
pub fn init(boot: &BootInfo) -> Result<MachineInfo, AcpiInitError> {
    // A Multiboot2 RSDP copy lives in the boot info, which may be reused later: keep it.
    static mut RSDP_COPY: [u8; 36] = [0; 36];
    let tables = if let Some(copy) = boot.rsdp_copy {
        // SAFETY: written once here, during single-threaded boot; the address stays valid.
        let addr = unsafe {
            let p = core::ptr::addr_of_mut!(RSDP_COPY);
            *p = copy;
            p as usize
        };
        // SAFETY: `addr` holds a copy of the RSDP the loader passed; the crate checks it.
        unsafe { AcpiTables::from_rsdp(IdentityMap, addr) }
    } else if let Some(addr) = boot.rsdp_address {
        // SAFETY: the loader says an RSDP is at `addr`; the crate validates its checksum.
        unsafe { AcpiTables::from_rsdp(IdentityMap, addr as usize) }
    } else {
        // SAFETY: scans the BIOS areas (EBDA, 0xE0000..0xFFFFF), identity-mapped.
        unsafe { AcpiTables::search_for_rsdp_bios(IdentityMap) }
    }
    .map_err(AcpiInitError::Tables)?;

    let mut info = MachineInfo { acpi_revision: tables.revision(), ..MachineInfo::default() };
    let madt = tables.find_table::<Madt>().map_err(AcpiInitError::Tables)?;
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                let flags = e.flags;
                if flags & 1 != 0 || flags & 2 != 0 {
                    info.cpus_enabled += 1;
                }
                if flags & 1 != 0 {
                    crate::arch::x86_64::smp::add_madt_cpu(u32::from(e.apic_id));
                }
            }
            MadtEntry::LocalX2Apic(e) => {
                let flags = e.flags;
                if flags & 1 != 0 {
                    info.cpus_enabled += 1;
                    crate::arch::x86_64::smp::add_madt_cpu(e.x2apic_id);
                }
            }
            MadtEntry::IoApic(e) => {
                let (id, address, gsi_base) = (e.io_apic_id, e.io_apic_address, e.global_system_interrupt_base);
                if let Some(a) = apic::add_io_apic(id, address, gsi_base) {
                    log::info!("ioapic: id {} at {:#x}, GSIs {}..{}", a.id, a.address, a.gsi_base, a.gsi_base + a.redirection_entries);
                    info.io_apics += 1;
                }
            }
            MadtEntry::InterruptSourceOverride(e) => {
                let flags = e.flags;
                let (isa_irq, gsi) = (e.irq, e.global_system_interrupt);
                apic::add_source_override(apic::SourceOverride {
                    isa_irq,
                    gsi,
                    active_low: flags & 0b11 == 0b11,
                    level_triggered: (flags >> 2) & 0b11 == 0b11,
                });
                info.source_overrides += 1;
            }
            _ => {}
        }
    }
    Ok(info)
}
