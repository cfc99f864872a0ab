//! The GDT and TSS, with the interrupt stacks (IST) every IDT gate switches to.
//!
//! Every gate uses an IST stack: the precompiled `core` uses the red zone, so an
//! interrupt must never push onto the stack of the code it interrupts.

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot (1-based, as in the gate descriptor) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMI and machine checks.
pub const IST_NMI: u8 = 2;
/// IST slot for all other exceptions.
pub const IST_EXCEPTION: u8 = 3;
/// IST slot for device and timer interrupts.
pub const IST_IRQ: u8 = 4;

const IST_STACK_SIZE_BYTES: usize = 64 * 1024;
const IST_STACK_COUNT: usize = 4;

#[repr(C, align(16))]
struct Stacks([[u8; IST_STACK_SIZE_BYTES]; IST_STACK_COUNT]);

static mut IST_STACKS: Stacks = Stacks([[0; IST_STACK_SIZE_BYTES]; IST_STACK_COUNT]);

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, SegmentSelector, SegmentSelector, SegmentSelector)> = Once::new();

/// Address range `[bottom, top)` of IST stack `slot` (1-based).
pub fn ist_stack_range(slot: u8) -> (u64, u64) {
    let index = usize::from(slot - 1);
    assert!(index < IST_STACK_COUNT);
    // SAFETY: only the address is taken; the stacks are used by the CPU alone.
    let base = unsafe { core::ptr::addr_of!(IST_STACKS.0[index]) } as u64;
    (base, base + IST_STACK_SIZE_BYTES as u64)
}

/// Builds and loads a GDT and TSS of its own for an application processor, with IST
/// stacks from the heap (leaked: CPUs are never taken offline).
pub fn init_ap() {
    let mut tss = TaskStateSegment::new();
    for slot in 0..IST_STACK_COUNT {
        let stack = alloc::boxed::Box::leak(alloc::vec![0u8; IST_STACK_SIZE_BYTES].into_boxed_slice());
        let top = (stack.as_ptr() as u64 + IST_STACK_SIZE_BYTES as u64) & !0xf;
        tss.interrupt_stack_table[slot] = VirtAddr::new(top);
    }
    let tss: &'static TaskStateSegment = alloc::boxed::Box::leak(alloc::boxed::Box::new(tss));
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    let gdt: &'static GlobalDescriptorTable = alloc::boxed::Box::leak(alloc::boxed::Box::new(gdt));
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, which is leaked ('static); the
    // same layout as the BSP's, so the IDT's code selector is valid here too.
    unsafe {
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        load_tss(tss_sel);
    }
}

/// Builds and loads the GDT and TSS. Call once, on the boot CPU.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        for slot in 1..=IST_STACK_COUNT as u8 {
            let (_, top) = ist_stack_range(slot);
            tss.interrupt_stack_table[usize::from(slot - 1)] = VirtAddr::new(top);
        }
        tss
    });
    let (gdt, code, data, tss_sel) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss_sel = gdt.append(Descriptor::tss_segment(tss));
        (gdt, code, data, tss_sel)
    });
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, which lives for 'static.
    unsafe {
        CS::set_reg(*code);
        DS::set_reg(*data);
        ES::set_reg(*data);
        SS::set_reg(*data);
        load_tss(*tss_sel);
    }
}
