//! Application processors: bring-up (INIT-SIPI-SIPI through a real-mode trampoline
//! copied below 1 MiB), per-CPU state, and the inter-processor interrupts.
//!
//! The boot CPU (BSP) keeps everything it ran before: the executor, drivers, network,
//! storage and the workload scheduler. Each application processor (AP) gets its own
//! stack, GDT and TSS (with its own IST stacks), loads the shared IDT, enables its
//! local APIC with a periodic timer on [`AP_TIMER_VECTOR`], and then waits in `hlt`
//! for work posted to its mailbox ([`run_on`]).
//!
//! Bring-up, one AP at a time: the BSP copies the trampoline to [`TRAMPOLINE_PHYS`]
//! (page 8; the frame allocator never hands out memory below 1 MiB), writes the AP's
//! stack and per-CPU record to `AP_BOOT`, sends INIT, waits 10 ms, then SIPI (twice if
//! needed, as the MultiProcessor Specification B.4 says), and waits for the AP to say
//! it is online before starting the next one. The trampoline switches to 32-bit
//! protected mode and far-jumps to `ap_start32` in the kernel's `.text` (the low page
//! is NX in the kernel's page tables, so no code runs from it once paging is on),
//! which loads the BSP's page tables, enters long mode and calls [`ap_main`].
//!
//! Per-CPU state: `IA32_GS_BASE` points at the CPU's [`PerCpu`], whose first word
//! points at itself, so [`this_cpu`] is one `mov gs:[0]`.
//!
//! TLB shootdown: page-permission changes (`mm/paging.rs`) call [`flush_tlb_others`]
//! once other CPUs are online; it sends [`SHOOTDOWN_VECTOR`] to every other CPU and
//! waits until each has reloaded CR3. The waiting CPU holds the paging lock, so no CPU
//! may wait for that lock (or any lock the changer holds) with interrupts disabled.
//!
//! Switched off with `gridos.smp=off`; with one CPU in the MADT nothing here runs.

use core::arch::global_asm;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use alloc::boxed::Box;
use alloc::vec;

use super::{apic, cpu, gdt, idt, interrupts, time};
use crate::bootinfo::{BootInfo, RegionKind};

/// Most CPUs the kernel brings up (the MADT may list more; they stay off).
pub const MAX_CPUS: usize = 64;
/// Physical address the trampoline is copied to; the SIPI vector is its page number.
pub const TRAMPOLINE_PHYS: u64 = 0x8000;
/// Vector of the APs' periodic local APIC timer (the BSP's is `time::TIMER_VECTOR`).
pub const AP_TIMER_VECTOR: u8 = 0x21;
/// Vector that wakes an AP to look at its mailbox.
pub const WAKE_VECTOR: u8 = 0xf0;
/// Vector that makes a CPU reload CR3 (TLB shootdown).
pub const SHOOTDOWN_VECTOR: u8 = 0xf1;

const AP_STACK_BYTES: usize = 256 * 1024;
const IA32_GS_BASE: u32 = 0xc000_0101;

// The trampoline: entered in real mode at TRAMPOLINE_PHYS with CS = TRAMPOLINE_PHYS >> 4,
// IP = 0. It loads its own GDT (32-bit code 0x08, data 0x10, 64-bit code 0x18), sets
// CR0.PE and jumps to `ap_start32` in the kernel image. Only copied, never run in place.
global_asm!(
    r#"
    .section .rodata.smp_trampoline, "a"
    .code16
    .global smp_trampoline_start
    .global smp_trampoline_end
smp_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (smp_tramp_gdt_ptr - smp_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $ap_start32
    .align 8
smp_tramp_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
smp_tramp_gdt_end:
smp_tramp_gdt_ptr:
    .short smp_tramp_gdt_end - smp_tramp_gdt - 1
    .long 0x8000 + (smp_tramp_gdt - smp_trampoline_start)
smp_trampoline_end:
    .code64
    .text
    "#,
    options(att_syntax)
);

// 32-bit entry in the kernel image: the same steps as `_start32` (start.rs) but with
// the BSP's page tables (`smp_ap_cr3`) and the stack the BSP allocated (`AP_BOOT`).
global_asm!(
    r#"
    .section .data.smp, "aw"
    .align 8
    .global smp_ap_cr3
smp_ap_cr3:
    .long 0
    .long 0

    .section .text.boot, "ax"
    .code32
    .global ap_start32
ap_start32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    /* CR4: PAE | OSFXSR | OSXMMEXCPT (the rest is copied from the BSP in ap_main) */
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4
    mov smp_ap_cr3, %eax
    mov %eax, %cr3
    /* EFER.NXE as on the BSP (the page tables carry NX bits) */
    xor %esi, %esi
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb 1f
    mov $0x80000001, %eax
    cpuid
    bt $20, %edx
    jnc 1f
    mov $(1 << 11), %esi
1:
    mov $0xc0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    or %esi, %eax
    wrmsr
    /* CR0: PG | MP | PE, clear EM and TS */
    mov %cr0, %eax
    and $0xfffffff3, %eax
    or $0x80000003, %eax
    mov %eax, %cr0
    ljmp $0x18, $ap_start64

    .code64
ap_start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    fninit
    movabs $AP_BOOT, %rax
    mov (%rax), %rsp
    xor %ebp, %ebp
    call ap_main
2:
    cli
    hlt
    jmp 2b
    .text
    "#,
    options(att_syntax)
);

extern "C" {
    static smp_trampoline_start: u8;
    static smp_trampoline_end: u8;
    static mut smp_ap_cr3: u64;
}

/// What the BSP hands the AP it is starting. `stack_top` must stay the first field
/// (`ap_start64` loads it).
#[repr(C)]
struct ApBoot {
    stack_top: AtomicU64,
    percpu: AtomicUsize,
}

#[no_mangle]
static AP_BOOT: ApBoot = ApBoot { stack_top: AtomicU64::new(0), percpu: AtomicUsize::new(0) };

/// A job posted to an AP: `job(arg)`, result stored in the mailbox.
type Job = fn(u64) -> u64;

/// One CPU's state. The first field points at the record itself (read through GS).
#[repr(C)]
pub struct PerCpu {
    self_ptr: usize,
    /// 0 for the BSP, then in bring-up order.
    pub index: u32,
    pub apic_id: u32,
    /// Timer interrupts this CPU took (APs only; the BSP counts in `time`).
    pub ticks: AtomicU64,
    /// Jobs this CPU finished.
    pub jobs_done: AtomicU64,
    /// TSC cycles this CPU spent in jobs.
    pub busy_cycles: AtomicU64,
    mailbox_job: AtomicUsize,
    mailbox_arg: AtomicU64,
    mailbox_result: AtomicU64,
    /// 0 empty, 4 being filled, 1 posted, 2 running, 3 done.
    mailbox_state: AtomicU32,
    shootdowns_seen: AtomicU64,
    /// wasmtime's two TLS slots while a fiber runs on this CPU (`wasm/platform.rs`).
    pub wasm_tls: [AtomicPtr<u8>; 2],
    /// The fiber running on this CPU (null on the CPU's own stack; `wasm/fiber.rs`).
    pub fiber: AtomicPtr<u8>,
}

impl PerCpu {
    /// The latest TLB shootdown this CPU carried out.
    pub fn shootdowns_seen(&self) -> u64 {
        self.shootdowns_seen.load(Ordering::Acquire)
    }

    const fn new(index: u32, apic_id: u32) -> PerCpu {
        PerCpu {
            self_ptr: 0,
            index,
            apic_id,
            ticks: AtomicU64::new(0),
            jobs_done: AtomicU64::new(0),
            busy_cycles: AtomicU64::new(0),
            mailbox_job: AtomicUsize::new(0),
            mailbox_arg: AtomicU64::new(0),
            mailbox_result: AtomicU64::new(0),
            mailbox_state: AtomicU32::new(MAILBOX_EMPTY),
            shootdowns_seen: AtomicU64::new(0),
            wasm_tls: [AtomicPtr::new(core::ptr::null_mut()), AtomicPtr::new(core::ptr::null_mut())],
            fiber: AtomicPtr::new(core::ptr::null_mut()),
        }
    }
}

const MAILBOX_EMPTY: u32 = 0;
const MAILBOX_POSTED: u32 = 1;
const MAILBOX_RUNNING: u32 = 2;
const MAILBOX_DONE: u32 = 3;
/// Claimed by a poster that is still writing the job.
const MAILBOX_FILLING: u32 = 4;

static mut BSP_PERCPU: PerCpu = PerCpu::new(0, 0);

/// The online CPUs' records, by index (index 0 is the BSP). Written once per CPU
/// during bring-up, before `ONLINE` counts it.
static CPUS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// CPUs online, the BSP included (0 before [`init_bsp`]).
static ONLINE: AtomicU32 = AtomicU32::new(0);
/// Local APIC ids of the enabled CPUs the MADT lists.
static MADT_APIC_IDS: spin::Mutex<heapless::Vec<u32, MAX_CPUS>> = spin::Mutex::new(heapless::Vec::new());
/// Control registers the BSP runs with, copied by each AP.
static BSP_CR0: AtomicU64 = AtomicU64::new(0);
static BSP_CR4: AtomicU64 = AtomicU64::new(0);
static BSP_XCR0: AtomicU64 = AtomicU64::new(0);
/// Shootdown requests sent so far, and how many CPUs have acknowledged the latest.
static SHOOTDOWN_GENERATION: AtomicU64 = AtomicU64::new(0);
static SHOOTDOWN_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Records a CPU the MADT lists as enabled (called by `acpi::init`).
pub fn add_madt_cpu(apic_id: u32) {
    if MADT_APIC_IDS.lock().push(apic_id).is_err() {
        log::warn!("smp: more than {MAX_CPUS} CPUs in the MADT; local APIC id {apic_id} stays off");
    }
}

fn set_gs_base(percpu: &'static PerCpu) {
    // SAFETY: IA32_GS_BASE exists on every x86-64 CPU; the kernel uses GS only for this.
    unsafe { cpu::wrmsr(IA32_GS_BASE, percpu as *const PerCpu as u64) };
}

/// Sets up the BSP's per-CPU record. Call once, before interrupts are enabled.
pub fn init_bsp(apic_id: u32) {
    // SAFETY: runs once on the BSP before any other CPU exists; afterwards the record
    // is only read (its counters are atomics).
    let percpu: &'static PerCpu = unsafe {
        let p = core::ptr::addr_of_mut!(BSP_PERCPU);
        (*p).self_ptr = p as usize;
        (*p).apic_id = apic_id;
        &*p
    };
    set_gs_base(percpu);
    CPUS[0].store(percpu as *const PerCpu as usize, Ordering::Release);
    ONLINE.store(1, Ordering::Release);
}

/// This CPU's record, or `None` before [`init_bsp`].
pub fn this_cpu() -> Option<&'static PerCpu> {
    if ONLINE.load(Ordering::Acquire) == 0 {
        return None;
    }
    let p: usize;
    // SAFETY: once ONLINE is non-zero, GS base on every running CPU points at its
    // PerCpu (the BSP's is set before ONLINE is, an AP's before it enables interrupts
    // or runs anything that calls this), whose first word is its own address.
    unsafe { core::arch::asm!("mov {}, qword ptr gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags)) };
    // SAFETY: PerCpu records are 'static (a static for the BSP, leaked for APs).
    (p != 0).then(|| unsafe { &*(p as *const PerCpu) })
}

/// Whether the caller runs on the boot CPU (true before SMP is set up).
pub fn on_boot_cpu() -> bool {
    this_cpu().is_none_or(|c| c.index == 0)
}

/// CPUs online, the BSP included.
pub fn online() -> u32 {
    ONLINE.load(Ordering::Acquire).max(1)
}

/// The record of CPU `index`, if it is online.
pub fn cpu(index: usize) -> Option<&'static PerCpu> {
    let p = CPUS.get(index)?.load(Ordering::Acquire);
    // SAFETY: only 'static PerCpu addresses are stored in CPUS.
    (p != 0).then(|| unsafe { &*(p as *const PerCpu) })
}

/// Why the APs were not started.
#[derive(Debug)]
pub enum SmpError {
    /// `gridos.smp=off`.
    Disabled,
    /// The MADT lists only the boot CPU.
    OneCpu,
    /// The trampoline page is not usable RAM in the boot memory map.
    TrampolinePageReserved,
    /// The page tables lie above 4 GiB (the 32-bit entry loads CR3 from 32 bits).
    PageTablesAbove4GiB,
}

fn trampoline_page_usable(boot: &BootInfo) -> bool {
    boot.regions.iter().any(|r| {
        r.kind == RegionKind::Usable && r.start <= TRAMPOLINE_PHYS && r.start.saturating_add(r.len_bytes) >= TRAMPOLINE_PHYS + 4096
    })
}

/// Starts every AP the MADT lists. Returns the number of CPUs online.
pub fn start_aps(boot: &BootInfo, enabled: bool) -> Result<u32, SmpError> {
    if !enabled {
        return Err(SmpError::Disabled);
    }
    let bsp_apic = this_cpu().map_or(0, |c| c.apic_id);
    let ids: heapless::Vec<u32, MAX_CPUS> = MADT_APIC_IDS.lock().iter().copied().filter(|&id| id != bsp_apic).collect();
    if ids.is_empty() {
        return Err(SmpError::OneCpu);
    }
    if !trampoline_page_usable(boot) {
        return Err(SmpError::TrampolinePageReserved);
    }
    let cr3 = x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64();
    if cr3 >= 1 << 32 {
        return Err(SmpError::PageTablesAbove4GiB);
    }
    BSP_CR0.store(x86_64::registers::control::Cr0::read_raw(), Ordering::Relaxed);
    let cr4 = x86_64::registers::control::Cr4::read_raw();
    BSP_CR4.store(cr4, Ordering::Relaxed);
    if cr4 & (1 << 18) != 0 {
        // SAFETY: CR4.OSXSAVE is set, so XGETBV with ECX = 0 is allowed.
        BSP_XCR0.store(unsafe { core::arch::x86_64::_xgetbv(0) }, Ordering::Relaxed);
    }
    // SAFETY: the page at TRAMPOLINE_PHYS is usable RAM (checked above) that the frame
    // allocator never hands out (it starts at 1 MiB), identity-mapped writable, and
    // nothing else uses it; the trampoline is smaller than a page (asserted).
    unsafe {
        let start = core::ptr::addr_of!(smp_trampoline_start);
        let len = core::ptr::addr_of!(smp_trampoline_end) as usize - start as usize;
        assert!(len <= 4096, "SMP trampoline larger than a page");
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE_PHYS as *mut u8, len);
        core::ptr::addr_of_mut!(smp_ap_cr3).write_volatile(cr3);
    }
    idt::register(AP_TIMER_VECTOR, on_ap_tick);
    idt::register(WAKE_VECTOR, on_wake);
    idt::register(SHOOTDOWN_VECTOR, on_shootdown);
    for apic_id in ids {
        let index = ONLINE.load(Ordering::Acquire);
        if index as usize >= MAX_CPUS {
            break;
        }
        if apic_id > 0xff {
            log::warn!("smp: CPU with x2APIC id {apic_id} cannot be started in xAPIC mode; left off");
            continue;
        }
        if !start_one(index, apic_id) {
            // A late AP would find AP_BOOT changed under it: start no more.
            log::warn!("smp: CPU with APIC id {apic_id} did not come up; no further CPUs started");
            break;
        }
    }
    Ok(online())
}

fn spin_us(us: u64) {
    let deadline = time::since_boot_ns() + us * 1000;
    while time::since_boot_ns() < deadline {
        core::hint::spin_loop();
    }
}

/// Starts one AP and waits (up to 1 s) until it is online.
fn start_one(index: u32, apic_id: u32) -> bool {
    let stack = Box::leak(vec![0u8; AP_STACK_BYTES].into_boxed_slice());
    let stack_top = (stack.as_ptr() as u64 + AP_STACK_BYTES as u64) & !0xf;
    let percpu = Box::leak(Box::new(PerCpu::new(index, apic_id)));
    percpu.self_ptr = percpu as *const PerCpu as usize;
    AP_BOOT.stack_top.store(stack_top, Ordering::SeqCst);
    AP_BOOT.percpu.store(percpu as *const PerCpu as usize, Ordering::SeqCst);
    let vector = (TRAMPOLINE_PHYS >> 12) as u8;
    apic::send_init(apic_id);
    spin_us(10_000);
    for _ in 0..2 {
        apic::send_startup(apic_id, vector);
        // Under emulation an AP takes a while to reach Rust; look for 500 ms.
        let deadline = time::since_boot_ns() + 500_000_000;
        while time::since_boot_ns() < deadline {
            if ONLINE.load(Ordering::Acquire) > index {
                return true;
            }
            core::hint::spin_loop();
        }
    }
    false
}

/// Rust entry of an AP, on the stack from `AP_BOOT`.
#[no_mangle]
extern "C" fn ap_main() -> ! {
    // SAFETY: the BSP stored a leaked, 'static PerCpu before sending the SIPI and does
    // not change AP_BOOT until this CPU is counted online.
    let percpu: &'static PerCpu = unsafe { &*(AP_BOOT.percpu.load(Ordering::SeqCst) as *const PerCpu) };
    // SAFETY: the BSP runs with these values; this CPU is the same model, and the
    // page tables (shared) were made for them (CR0.WP, CR4 and XCR0 as on the BSP).
    unsafe {
        x86_64::registers::control::Cr4::write_raw(BSP_CR4.load(Ordering::Relaxed));
        if BSP_CR4.load(Ordering::Relaxed) & (1 << 18) != 0 {
            core::arch::x86_64::_xsetbv(0, BSP_XCR0.load(Ordering::Relaxed));
        }
        x86_64::registers::control::Cr0::write_raw(BSP_CR0.load(Ordering::Relaxed));
    }
    gdt::init_ap();
    idt::load();
    set_gs_base(percpu);
    apic::init_local_ap();
    apic::start_periodic_timer(AP_TIMER_VECTOR, time::TICK_HZ);
    CPUS[percpu.index as usize].store(percpu as *const PerCpu as usize, Ordering::Release);
    log::info!("smp: cpu {} online (local APIC id {})", percpu.index, percpu.apic_id);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    idle_loop(percpu)
}

fn idle_loop(percpu: &'static PerCpu) -> ! {
    loop {
        if percpu.mailbox_state.load(Ordering::Acquire) == MAILBOX_POSTED {
            run_mailbox(percpu);
            continue;
        }
        interrupts::disable();
        if percpu.mailbox_state.load(Ordering::Acquire) == MAILBOX_POSTED {
            interrupts::enable();
            continue;
        }
        // `sti; hlt`: a wake-up IPI between the check and the halt is not lost.
        interrupts::enable_and_wait();
    }
}

fn run_mailbox(percpu: &PerCpu) {
    percpu.mailbox_state.store(MAILBOX_RUNNING, Ordering::Release);
    let job = percpu.mailbox_job.load(Ordering::Acquire);
    let arg = percpu.mailbox_arg.load(Ordering::Acquire);
    // SAFETY: only `run_on` stores a job, and it stores a `Job` fn pointer.
    let job: Job = unsafe { core::mem::transmute::<usize, Job>(job) };
    let start = cpu::rdtsc();
    let result = job(arg);
    percpu.busy_cycles.fetch_add(cpu::rdtsc().wrapping_sub(start), Ordering::Relaxed);
    percpu.jobs_done.fetch_add(1, Ordering::Relaxed);
    percpu.mailbox_result.store(result, Ordering::Release);
    percpu.mailbox_state.store(MAILBOX_DONE, Ordering::Release);
    // The poster (the boot CPU) may be halted in `wait_result`.
    if let Some(bsp) = cpu(0) {
        apic::send_ipi(bsp.apic_id, WAKE_VECTOR);
    }
}

/// Why a job could not be posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// No such AP online (index 0 is the BSP, which has no mailbox).
    NoSuchCpu,
    /// The AP's mailbox holds a job that has not been collected.
    Busy,
}

/// Posts `job(arg)` to AP `index` and wakes it. Collect the result with [`poll_result`].
pub fn run_on(index: usize, job: fn(u64) -> u64, arg: u64) -> Result<(), RunError> {
    if index == 0 {
        return Err(RunError::NoSuchCpu);
    }
    let percpu = cpu(index).ok_or(RunError::NoSuchCpu)?;
    // Claim the mailbox first, so two posters can never fill it at once.
    percpu
        .mailbox_state
        .compare_exchange(MAILBOX_EMPTY, MAILBOX_FILLING, Ordering::AcqRel, Ordering::Acquire)
        .map_err(|_| RunError::Busy)?;
    percpu.mailbox_job.store(job as usize, Ordering::Release);
    percpu.mailbox_arg.store(arg, Ordering::Release);
    percpu.mailbox_state.store(MAILBOX_POSTED, Ordering::Release);
    apic::send_ipi(percpu.apic_id, WAKE_VECTOR);
    Ok(())
}

/// The result of the job on AP `index` once it finished (the mailbox is then free).
pub fn poll_result(index: usize) -> Option<u64> {
    let percpu = cpu(index)?;
    if percpu.mailbox_state.load(Ordering::Acquire) != MAILBOX_DONE {
        return None;
    }
    let result = percpu.mailbox_result.load(Ordering::Acquire);
    percpu.mailbox_state.store(MAILBOX_EMPTY, Ordering::Release);
    Some(result)
}

/// Waits until the job on AP `index` finished and returns its result, halting
/// between interrupts (the AP wakes the boot CPU when done) when interrupts are on.
/// `None` if no job is posted there.
pub fn wait_result(index: usize) -> Option<u64> {
    let percpu = cpu(index)?;
    loop {
        if let Some(result) = poll_result(index) {
            return Some(result);
        }
        if percpu.mailbox_state.load(Ordering::Acquire) == MAILBOX_EMPTY {
            return None;
        }
        if interrupts::are_enabled() {
            interrupts::disable();
            if percpu.mailbox_state.load(Ordering::Acquire) == MAILBOX_DONE {
                interrupts::enable();
                continue;
            }
            // `sti; hlt`: the AP's wake-up IPI after the check is not lost.
            interrupts::enable_and_wait();
        } else {
            core::hint::spin_loop();
        }
    }
}

fn on_ap_tick(_vector: u8) {
    if let Some(c) = this_cpu() {
        c.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

fn on_wake(_vector: u8) {}

fn on_shootdown(_vector: u8) {
    x86_64::instructions::tlb::flush_all();
    if let Some(c) = this_cpu() {
        c.shootdowns_seen.store(SHOOTDOWN_GENERATION.load(Ordering::Acquire), Ordering::Release);
    }
}

/// Makes every other online CPU drop its TLB entries (after a page-permission change
/// the caller has already flushed locally) and waits until each has. Does nothing
/// while only one CPU is online.
pub fn flush_tlb_others() {
    let online = ONLINE.load(Ordering::Acquire) as usize;
    if online <= 1 {
        return;
    }
    let _guard = SHOOTDOWN_LOCK.lock();
    let me = this_cpu().map_or(0, |c| c.index as usize);
    let generation = SHOOTDOWN_GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    for index in (0..online).filter(|&i| i != me) {
        if let Some(c) = cpu(index) {
            apic::send_ipi(c.apic_id, SHOOTDOWN_VECTOR);
        }
    }
    for index in (0..online).filter(|&i| i != me) {
        if let Some(c) = cpu(index) {
            while c.shootdowns_seen.load(Ordering::Acquire) < generation {
                core::hint::spin_loop();
            }
        }
    }
}

/// Vectors only the SMP code uses (not counted as the BSP's latest interrupt).
pub fn is_smp_vector(vector: u8) -> bool {
    matches!(vector, AP_TIMER_VECTOR | WAKE_VECTOR | SHOOTDOWN_VECTOR)
}
