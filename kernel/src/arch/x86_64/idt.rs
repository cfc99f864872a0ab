//! The IDT: one assembly entry stub per vector, a common path that saves all
//! registers and the FPU/SSE/AVX state (`xsave` of what XCR0 enables once
//! `cpu::enable_extended_state` turned it on, else `fxsave`), and a Rust dispatcher.
//!
//! Exceptions other than the breakpoint are fatal (an NMI first lets `smp` park a CPU
//! it took out of service): the report gives vector, error
//! code, RIP, CR2 and the decoded error code and page protection (page faults), all
//! registers and a frame-pointer stack walk, then
//! the kernel halts, or in test mode exits QEMU with a failure code. Vectors 32 and
//! up dispatch to handlers registered with [`register`], followed by a local-APIC EOI.

use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::gdt;

/// First vector available to devices and timers.
pub const FIRST_IRQ_VECTOR: u8 = 32;
/// Vector of the local APIC's spurious interrupts (no EOI).
pub const SPURIOUS_VECTOR: u8 = 0xff;

// One stub per vector. CPU-pushed error codes exist for 8, 10-14, 17, 21, 29, 30;
// the other stubs push a zero so every frame has the same layout.
global_asm!(
    r#"
    .section .text.isr, "ax"
    .altmacro
    .macro isr_stub n
    .align 16
isr_stub_\n:
    .if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    .else
    pushq $0
    .endif
    pushq $\n
    jmp isr_common
    .endm

    .set i, 0
    .rept 256
    isr_stub %i
    .set i, i + 1
    .endr

isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rbx
    sub ISR_SAVE_AREA_BYTES(%rip), %rsp
    and $-64, %rsp
    mov ISR_XSAVE_MASK(%rip), %eax
    mov ISR_XSAVE_MASK+4(%rip), %edx
    test %eax, %eax
    jz isr_fxsave
    /* XRSTOR needs the header's reserved bytes zero: clear the 64-byte header first. */
    xor %ecx, %ecx
    mov %rcx, 512(%rsp)
    mov %rcx, 520(%rsp)
    mov %rcx, 528(%rsp)
    mov %rcx, 536(%rsp)
    mov %rcx, 544(%rsp)
    mov %rcx, 552(%rsp)
    mov %rcx, 560(%rsp)
    mov %rcx, 568(%rsp)
    xsave64 (%rsp)
    jmp isr_saved
isr_fxsave:
    fxsave64 (%rsp)
isr_saved:
    mov %rbx, %rdi
    cld
    call interrupt_dispatch
    mov ISR_XSAVE_MASK(%rip), %eax
    mov ISR_XSAVE_MASK+4(%rip), %edx
    test %eax, %eax
    jz isr_fxrstor
    xrstor64 (%rsp)
    jmp isr_restored
isr_fxrstor:
    fxrstor64 (%rsp)
isr_restored:
    mov %rbx, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq

    .macro isr_addr n
    .quad isr_stub_\n
    .endm

    .section .rodata.isr, "a"
    .align 8
    .global ISR_STUB_TABLE
ISR_STUB_TABLE:
    .set i, 0
    .rept 256
    isr_addr %i
    .set i, i + 1
    .endr
    .noaltmacro
    .text
    "#,
    options(att_syntax)
);

extern "C" {
    static ISR_STUB_TABLE: [u64; 256];
}

/// The registers saved on interrupt entry, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// A 16-byte interrupt gate descriptor.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Gate(u128);

impl Gate {
    fn interrupt(handler: u64, code_selector: u16, ist: u8) -> Gate {
        let mut g: u128 = handler as u128 & 0xffff;
        g |= (code_selector as u128) << 16;
        g |= ((ist & 7) as u128) << 32;
        g |= 0x8e_u128 << 40; // present, DPL 0, 64-bit interrupt gate
        g |= ((handler as u128 >> 16) & 0xffff) << 48;
        g |= (handler as u128 >> 32) << 64;
        Gate(g)
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static mut IDT: Idt = Idt([Gate(0); 256]);

/// Where the CPU was when the latest device or timer interrupt arrived (for the
/// stall watchdog).
pub static LAST_IRQ_RIP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
pub static LAST_IRQ_RBP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Handlers for vectors 32..=255, stored as `fn(u8)` addresses (0 = none).
static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Builds and loads the IDT. Call once, after [`gdt::init`].
pub fn init() {
    use x86_64::instructions::segmentation::Segment;
    let code_selector = x86_64::instructions::segmentation::CS::get_reg().0;
    for vector in 0..256usize {
        let ist = match vector {
            2 | 18 => gdt::IST_NMI,
            8 => gdt::IST_DOUBLE_FAULT,
            0..=31 => gdt::IST_EXCEPTION,
            _ => gdt::IST_IRQ,
        };
        // SAFETY: the stub table is immutable data emitted above; IDT is written only
        // here, before `lidt`, with interrupts disabled on the single boot CPU.
        unsafe {
            let handler = ISR_STUB_TABLE[vector];
            (*core::ptr::addr_of_mut!(IDT)).0[vector] = Gate::interrupt(handler, code_selector, ist);
        }
    }
    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(core::ptr::addr_of!(IDT) as u64),
    };
    // SAFETY: the IDT is 'static, fully initialized, and every gate points at a stub above.
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}

/// Loads the IDT [`init`] built on this CPU (application processors share it; each
/// has its own TSS, so the IST slots name its own stacks).
pub fn load() {
    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(core::ptr::addr_of!(IDT) as u64),
    };
    // SAFETY: the BSP filled the IDT in `init` before starting any other CPU, and it
    // is not written again.
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}

/// Registers `handler` for `vector` (32..=254). Handlers run with interrupts
/// disabled on an IST stack and must not allocate or block.
pub fn register(vector: u8, handler: fn(u8)) {
    assert!(vector >= FIRST_IRQ_VECTOR && vector != SPURIOUS_VECTOR);
    HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Release);
}

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error", "debug", "NMI", "breakpoint", "overflow", "bound range exceeded",
    "invalid opcode", "device not available", "double fault", "coprocessor segment overrun",
    "invalid TSS", "segment not present", "stack-segment fault", "general protection fault",
    "page fault", "reserved", "x87 floating-point", "alignment check", "machine check",
    "SIMD floating-point", "virtualization", "control protection", "reserved", "reserved",
    "reserved", "reserved", "reserved", "reserved", "hypervisor injection", "VMM communication",
    "security", "reserved",
];

#[no_mangle]
extern "C" fn interrupt_dispatch(frame: &mut InterruptFrame) {
    let vector = frame.vector as u8;
    match vector {
        3 => {
            log::info!("breakpoint at rip={:#x}, continuing", frame.rip);
        }
        2 => {
            // An application processor taken out of service parks here (never returns).
            super::smp::on_nmi();
            fatal_exception(frame)
        }
        0..=31 => fatal_exception(frame),
        SPURIOUS_VECTOR => {}
        _ => {
            if !super::smp::is_smp_vector(vector) {
                LAST_IRQ_RIP.store(frame.rip, Ordering::Relaxed);
                LAST_IRQ_RBP.store(frame.rbp, Ordering::Relaxed);
            }
            let handler = HANDLERS[usize::from(vector)].load(Ordering::Acquire);
            if handler != 0 {
                // SAFETY: only `register` stores non-zero values, and it stores `fn(u8)`s.
                let handler: fn(u8) = unsafe { core::mem::transmute::<usize, fn(u8)>(handler) };
                handler(vector);
            } else {
                log::warn!("unexpected interrupt on vector {vector}");
            }
            super::apic::end_of_interrupt();
        }
    }
}

fn fatal_exception(frame: &InterruptFrame) -> ! {
    // SAFETY: this path never returns to whatever it interrupted.
    unsafe { crate::console::force_unlock() };
    let vector = frame.vector as usize;
    crate::kprintln!(
        "\nFATAL EXCEPTION: {} (vector {}) error_code={:#x}",
        EXCEPTION_NAMES[vector % 32],
        vector,
        frame.error_code
    );
    crate::kprintln!("  rip={:#018x} cs={:#x} rflags={:#x} rsp={:#018x} ss={:#x}",
        frame.rip, frame.cs, frame.rflags, frame.rsp, frame.ss);
    if vector == 14 {
        let cr2 = x86_64::registers::control::Cr2::read_raw();
        let e = frame.error_code;
        crate::kprintln!(
            "  cr2={:#018x} ({} {} in {} mode{})",
            cr2,
            if e & 1 != 0 { "protection violation" } else { "page not present" },
            if e & 2 != 0 { "on write" } else if e & 16 != 0 { "on instruction fetch" } else { "on read" },
            if e & 4 != 0 { "user" } else { "kernel" },
            if e & 8 != 0 { ", reserved bit set" } else { "" },
        );
        if let Some(p) = crate::mm::paging::protection(cr2) {
            crate::kprintln!(
                "  page at cr2: {} KiB, {}, {}",
                p.page_bytes / 1024,
                if p.writable { "writable" } else { "read-only" },
                if p.executable { "executable" } else { "NX" },
            );
        }
    }
    crate::kprintln!("  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}", frame.rax, frame.rbx, frame.rcx, frame.rdx);
    crate::kprintln!("  rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}", frame.rsi, frame.rdi, frame.rbp, frame.r8);
    crate::kprintln!("  r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}", frame.r9, frame.r10, frame.r11, frame.r12);
    crate::kprintln!("  r13={:#018x} r14={:#018x} r15={:#018x}", frame.r13, frame.r14, frame.r15);
    print_stack_walk(frame.rip, frame.rbp);
    crate::power::fatal("fatal exception")
}

/// Prints return addresses found by following saved frame pointers (the kernel is
/// built with `-Cforce-frame-pointers=yes`), bounded in depth and to mapped memory.
pub fn print_stack_walk(rip: u64, mut rbp: u64) {
    crate::kprintln!("  stack walk:");
    if rip != 0 {
        crate::kprintln!("    #0 {:#018x}", rip);
    }
    for depth in 1..16 {
        if rbp == 0 || rbp % 8 != 0 || !crate::mm::is_identity_mapped(rbp, 16) {
            break;
        }
        // SAFETY: `rbp` is aligned and lies in mapped memory (checked above); a
        // corrupt chain yields garbage numbers, never an access outside mapped RAM.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret == 0 {
            break;
        }
        crate::kprintln!("    #{} {:#018x}", depth, ret);
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}
