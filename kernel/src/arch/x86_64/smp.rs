//! Application processors: bring-up (INIT-SIPI-SIPI through a real-mode trampoline
//! copied below 1 MiB), per-CPU state, the inter-processor interrupts, and taking a
//! CPU that stops answering out of service.
//!
//! The boot CPU (BSP) keeps everything it ran before: the executor, drivers, network,
//! storage and the workload scheduler. Each application processor (AP) gets its own
//! stack, GDT and TSS (with its own IST stacks), loads the shared IDT, enables its
//! local APIC (in the BSP's mode, xAPIC or x2APIC: `apic.rs`) with a periodic timer on
//! [`AP_TIMER_VECTOR`], and then waits in `hlt` for work posted to its mailbox
//! ([`run_on`]).
//!
//! Bring-up, one AP at a time: the BSP copies the trampoline to [`TRAMPOLINE_PHYS`]
//! (page 8; the frame allocator never hands out memory below 1 MiB), writes the AP's
//! stack and per-CPU record to `AP_BOOT`, sends INIT, waits 10 ms, then SIPI (twice if
//! needed, as the MultiProcessor Specification B.4 says), and waits (500 ms per SIPI)
//! for the AP to say it is online before starting the next one. The trampoline
//! switches to 32-bit protected mode and far-jumps to `ap_start32` in the kernel's
//! `.text` (the low page is NX in the kernel's page tables, so no code runs from it
//! once paging is on), which loads the BSP's page tables, enters long mode and calls
//! [`ap_main`]. The AP claims its record by swapping it out of `AP_BOOT`; an AP that
//! has not claimed it when the BSP gives up is held with INIT and the next one is
//! started (one that claimed it but is late stops the bring-up, as its index is taken).
//!
//! Per-CPU state: `IA32_GS_BASE` points at the CPU's [`PerCpu`], whose first word
//! points at itself, so [`this_cpu`] is one `mov gs:[0]`.
//!
//! TLB shootdown: page-permission changes (`mm/paging.rs`) call [`flush_tlb_others`]
//! once other CPUs are online; it sends [`SHOOTDOWN_VECTOR`] to every other CPU in
//! service and waits until each has reloaded CR3. The waiting CPU holds the paging
//! lock, so no CPU may wait for that lock (or any lock the changer holds) with
//! interrupts disabled.
//!
//! Every cross-CPU wait is bounded (`smpcore::answer`): a CPU that has not answered
//! an IPI is sent it again every 10 ms, and after 100 ms in all (1 s under a
//! hypervisor; `gridos.smp.answer_ms`) it is taken out of service: reported (`smp: cpu N (apic A)
//! did not answer a TLB shootdown in T ms: taken out of service`), dropped from the
//! in-service set (no more shootdown waits, jobs, workload slices or wake-ups go to
//! it), and sent an NMI. A CPU taken out of service may hold stale TLB entries, so it
//! must never run kernel or workload code again: its NMI handler, its interrupt
//! handlers and its mailbox loop each check the flag and park it (`park`: CR3 reloaded
//! first, then `cli; hlt` for good). The NMI gets through interrupts disabled, and a
//! CPU stuck harder than that takes the NMI it has pending as soon as it runs again.
//! A job running on it is lost: [`wait_result`] (which probes a CPU whose job takes
//! long with the same bounded IPI wait) says [`WaitError::OutOfService`], and the
//! workload scheduler ends that workload and moves the others. The boot CPU is never
//! taken out of service (an AP waiting for it reports it overdue once and waits on:
//! the node cannot run without it). A CPU that wedged while holding a kernel lock
//! (the console, the heap) still stops every CPU that then takes that lock.
//!
//! Switched off with `gridos.smp=off`; with one CPU in the MADT nothing here runs.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use alloc::boxed::Box;
use alloc::vec;

use super::{apic, cpu, gdt, idt, interrupts, time};
use crate::bootinfo::{BootInfo, RegionKind};
use smpcore::answer::{AnswerWait, Bounds, Step};

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
    /// Set once when the CPU is taken out of service; it parks when it sees it.
    out_of_service: AtomicBool,
    /// Set by the CPU itself once parked (CR3 reloaded, halted for good).
    parked: AtomicBool,
}

impl PerCpu {
    /// The latest TLB shootdown this CPU carried out.
    pub fn shootdowns_seen(&self) -> u64 {
        self.shootdowns_seen.load(Ordering::Acquire)
    }

    /// Whether the CPU was taken out of service.
    pub fn is_out_of_service(&self) -> bool {
        self.out_of_service.load(Ordering::Acquire)
    }

    /// Whether the CPU, out of service, has parked itself (it will run nothing again).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Acquire)
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
            out_of_service: AtomicBool::new(false),
            parked: AtomicBool::new(false),
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
/// CPUs in service (bit i = CPU index i): online, and not taken out of service.
static IN_SERVICE: AtomicU64 = AtomicU64::new(0);
/// How long a CPU may take to answer an IPI before it is taken out of service
/// (set at boot from `gridos.smp.answer_ms` or [`default_answer_bound_ms`]).
static ANSWER_BOUND_MS: AtomicU64 = AtomicU64::new(100);
/// The slowest answer to a shootdown or probe so far (ns), from CPUs that answered.
static SLOWEST_ANSWER_NS: AtomicU64 = AtomicU64::new(0);
/// Test hook: the next job posted to CPU index N - 1 (0: none) spins with interrupts
/// disabled instead of running ([`wedge_next_job_on`]).
static WEDGE_NEXT_JOB: AtomicU32 = AtomicU32::new(0);
static WEDGE_SPIN_MS: AtomicU64 = AtomicU64::new(0);

/// Records a CPU the MADT lists as enabled (called by `acpi::init` for Processor
/// Local APIC and Processor Local x2APIC entries; an id listed twice counts once).
pub fn add_madt_cpu(apic_id: u32) {
    let mut ids = MADT_APIC_IDS.lock();
    if ids.contains(&apic_id) {
        log::warn!("smp: the MADT lists local APIC id {apic_id} twice; counted once");
        return;
    }
    if ids.push(apic_id).is_err() {
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
    IN_SERVICE.store(1, Ordering::Release);
    ONLINE.store(1, Ordering::Release);
}

/// Sets how long a CPU may take to answer an IPI (`gridos.smp.answer_ms`, 1..=60000).
pub fn set_answer_bound_ms(ms: u64) {
    ANSWER_BOUND_MS.store(ms.clamp(1, 60_000), Ordering::Relaxed);
}

/// The default answer bound: 100 ms on hardware; 1 s under a hypervisor
/// (CPUID.01H:ECX[31]), whose host may leave a virtual CPU unscheduled for tens of
/// milliseconds (21 ms was seen under QEMU TCG on a loaded 2-core host), which must
/// not cost the node a CPU for good.
pub fn default_answer_bound_ms() -> u64 {
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 31) != 0 {
        1000
    } else {
        100
    }
}

fn bounds() -> Bounds {
    Bounds::from_give_up_ms(ANSWER_BOUND_MS.load(Ordering::Relaxed))
}

/// How long a CPU may take to answer an IPI before it is taken out of service (ms).
pub fn answer_bound_ms() -> u64 {
    ANSWER_BOUND_MS.load(Ordering::Relaxed)
}

/// The slowest answer to a shootdown or liveness probe so far, in microseconds.
pub fn slowest_answer_us() -> u64 {
    SLOWEST_ANSWER_NS.load(Ordering::Relaxed) / 1000
}

/// Whether CPU `index` is online and in service.
pub fn in_service(index: usize) -> bool {
    index < MAX_CPUS && IN_SERVICE.load(Ordering::Acquire) & (1 << index) != 0
}

/// The CPUs in service, by index, the boot CPU (0) first.
pub fn in_service_cpus() -> heapless::Vec<usize, MAX_CPUS> {
    let mask = IN_SERVICE.load(Ordering::Acquire).max(1);
    (0..MAX_CPUS).filter(|&i| mask & (1 << i) != 0).collect()
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

/// CPUs brought online, the BSP included (some may since have been taken out of
/// service: [`in_service_cpus`]).
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
    log::info!("smp: a CPU that does not answer an IPI within {} ms is taken out of service",
        ANSWER_BOUND_MS.load(Ordering::Relaxed));
    idt::register(AP_TIMER_VECTOR, on_ap_tick);
    idt::register(WAKE_VECTOR, on_wake);
    idt::register(SHOOTDOWN_VECTOR, on_shootdown);
    for apic_id in ids {
        let index = ONLINE.load(Ordering::Acquire);
        if index as usize >= MAX_CPUS {
            break;
        }
        if apic_id > 0xff && apic::mode() == apic::ApicMode::XApic {
            log::warn!("smp: CPU with x2APIC id {apic_id} cannot be started in xAPIC mode; left off");
            continue;
        }
        match start_one(index, apic_id) {
            StartOutcome::Online => {}
            StartOutcome::NotStarted => {
                log::warn!("smp: CPU with APIC id {apic_id} did not come up; held with INIT, left off");
            }
            StartOutcome::Late => {
                // It took index `index` and may still come online: start no more.
                log::warn!("smp: CPU with APIC id {apic_id} started but is not online after 1.5 s; no further CPUs started");
                break;
            }
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

/// How the start of one AP ended.
enum StartOutcome {
    Online,
    /// It never claimed its boot record: held with INIT, `AP_BOOT` free for the next.
    NotStarted,
    /// It claimed its record but is not online yet.
    Late,
}

/// Starts one AP and waits (up to 1 s, then 500 ms more once it has claimed its boot
/// record) until it is online.
fn start_one(index: u32, apic_id: u32) -> StartOutcome {
    let stack = Box::leak(vec![0u8; AP_STACK_BYTES].into_boxed_slice());
    let stack_top = (stack.as_ptr() as u64 + AP_STACK_BYTES as u64) & !0xf;
    let percpu = Box::leak(Box::new(PerCpu::new(index, apic_id)));
    percpu.self_ptr = percpu as *const PerCpu as usize;
    AP_BOOT.stack_top.store(stack_top, Ordering::SeqCst);
    AP_BOOT.percpu.store(percpu as *const PerCpu as usize, Ordering::SeqCst);
    let vector = (TRAMPOLINE_PHYS >> 12) as u8;
    let online = |within_ns: u64| {
        let deadline = time::since_boot_ns() + within_ns;
        while time::since_boot_ns() < deadline {
            if ONLINE.load(Ordering::Acquire) > index {
                return true;
            }
            core::hint::spin_loop();
        }
        false
    };
    if apic::send_init(apic_id).is_err() {
        return StartOutcome::NotStarted;
    }
    spin_us(10_000);
    for _ in 0..2 {
        if apic::send_startup(apic_id, vector).is_err() {
            return StartOutcome::NotStarted;
        }
        // Under emulation an AP takes a while to reach Rust; look for 500 ms.
        if online(500_000_000) {
            return StartOutcome::Online;
        }
    }
    if AP_BOOT.percpu.swap(0, Ordering::SeqCst) != 0 {
        // Not claimed: stop the AP wherever it is (INIT holds it until a SIPI), so it
        // never reads `AP_BOOT` again; give the INIT time to land before reusing it.
        let _ = apic::send_init(apic_id);
        spin_us(10_000);
        return StartOutcome::NotStarted;
    }
    if online(500_000_000) {
        StartOutcome::Online
    } else {
        StartOutcome::Late
    }
}

/// Rust entry of an AP, on the stack from `AP_BOOT`.
#[no_mangle]
extern "C" fn ap_main() -> ! {
    // Claim the record; 0 means the BSP gave up on this CPU (and is sending INIT).
    let record = AP_BOOT.percpu.swap(0, Ordering::SeqCst);
    if record == 0 {
        interrupts::halt_forever();
    }
    // SAFETY: the BSP stored a leaked, 'static PerCpu before sending the SIPI; this CPU
    // took it out of AP_BOOT (above), so it is this CPU's alone.
    let percpu: &'static PerCpu = unsafe { &*(record as *const PerCpu) };
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
    IN_SERVICE.fetch_or(1 << percpu.index, Ordering::AcqRel);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    idle_loop(percpu)
}

fn idle_loop(percpu: &'static PerCpu) -> ! {
    loop {
        park_if_out_of_service(percpu);
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
    if WEDGE_NEXT_JOB.compare_exchange(percpu.index + 1, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        wedge();
        park_if_out_of_service(percpu);
    }
    let start = cpu::rdtsc();
    let result = job(arg);
    // Taken out of service while the job ran: its result is not trusted, and the CPU
    // runs nothing more.
    park_if_out_of_service(percpu);
    percpu.busy_cycles.fetch_add(cpu::rdtsc().wrapping_sub(start), Ordering::Relaxed);
    percpu.jobs_done.fetch_add(1, Ordering::Relaxed);
    percpu.mailbox_result.store(result, Ordering::Release);
    percpu.mailbox_state.store(MAILBOX_DONE, Ordering::Release);
    // The poster (the boot CPU) may be halted in `wait_result`.
    if let Some(bsp) = cpu(0) {
        let _ = apic::send_ipi(bsp.apic_id, WAKE_VECTOR);
    }
}

/// Why a job could not be posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// No such AP online (index 0 is the BSP, which has no mailbox).
    NoSuchCpu,
    /// The AP's mailbox holds a job that has not been collected.
    Busy,
    /// The AP was taken out of service.
    OutOfService,
}

/// Why [`wait_result`] returned without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// No job is posted there (or no such AP).
    NoJob,
    /// The AP stopped answering and was taken out of service; its job is lost.
    OutOfService,
}

/// Posts `job(arg)` to AP `index` and wakes it. Collect the result with [`poll_result`].
pub fn run_on(index: usize, job: fn(u64) -> u64, arg: u64) -> Result<(), RunError> {
    if index == 0 {
        return Err(RunError::NoSuchCpu);
    }
    let percpu = cpu(index).ok_or(RunError::NoSuchCpu)?;
    if !in_service(index) {
        return Err(RunError::OutOfService);
    }
    // Claim the mailbox first, so two posters can never fill it at once.
    percpu
        .mailbox_state
        .compare_exchange(MAILBOX_EMPTY, MAILBOX_FILLING, Ordering::AcqRel, Ordering::Acquire)
        .map_err(|_| RunError::Busy)?;
    percpu.mailbox_job.store(job as usize, Ordering::Release);
    percpu.mailbox_arg.store(arg, Ordering::Release);
    percpu.mailbox_state.store(MAILBOX_POSTED, Ordering::Release);
    // The APIC id was encodable when the CPU was started.
    let _ = apic::send_ipi(percpu.apic_id, WAKE_VECTOR);
    Ok(())
}

/// The result of the job on AP `index` once it finished (the mailbox is then free).
/// `None` while it runs, and for good once the AP is out of service.
pub fn poll_result(index: usize) -> Option<u64> {
    let percpu = cpu(index)?;
    if !in_service(index) {
        return None;
    }
    if percpu.mailbox_state.load(Ordering::Acquire) != MAILBOX_DONE {
        return None;
    }
    let result = percpu.mailbox_result.load(Ordering::Acquire);
    percpu.mailbox_state.store(MAILBOX_EMPTY, Ordering::Release);
    Some(result)
}

/// Waits until the job on AP `index` finished and returns its result, halting
/// between interrupts (the AP wakes the boot CPU when done) when interrupts are on.
/// While the job runs, the AP is probed every answer bound (100 ms; 1 s in a VM) with a shootdown
/// IPI: one that does not answer it is taken out of service and its job is lost.
///
/// # Errors
/// [`WaitError::NoJob`] if no job is posted there, [`WaitError::OutOfService`] if the
/// AP is (or was just taken) out of service.
pub fn wait_result(index: usize) -> Result<u64, WaitError> {
    let percpu = cpu(index).ok_or(WaitError::NoJob)?;
    let probe_every_ns = bounds().give_up_ns;
    let mut next_probe_ns = time::since_boot_ns() + probe_every_ns;
    loop {
        if !in_service(index) {
            return Err(WaitError::OutOfService);
        }
        if let Some(result) = poll_result(index) {
            return Ok(result);
        }
        if percpu.mailbox_state.load(Ordering::Acquire) == MAILBOX_EMPTY {
            return Err(WaitError::NoJob);
        }
        if time::since_boot_ns() >= next_probe_ns {
            probe(index);
            next_probe_ns = time::since_boot_ns() + probe_every_ns;
            continue;
        }
        if interrupts::are_enabled() {
            interrupts::disable();
            if percpu.mailbox_state.load(Ordering::Acquire) == MAILBOX_DONE {
                interrupts::enable();
                continue;
            }
            // `sti; hlt`: the AP's wake-up IPI after the check is not lost; the boot
            // CPU's own timer tick ends the halt at the latest.
            interrupts::enable_and_wait();
        } else {
            core::hint::spin_loop();
        }
    }
}

/// Test hook (`gridos.test=smp`): before the next job posted to CPU `index` runs, the
/// CPU spins with interrupts disabled for `spin_ms` (at most 10 s), as a CPU stuck in
/// a hardware fault would; then, if it was taken out of service meanwhile (as it
/// should have been if `spin_ms` passes the answer bound and no NMI parked it), it
/// parks instead of running the job.
pub fn wedge_next_job_on(index: usize, spin_ms: u64) {
    WEDGE_SPIN_MS.store(spin_ms.min(10_000), Ordering::Release);
    WEDGE_NEXT_JOB.store(index as u32 + 1, Ordering::Release);
}

/// Whether the hook of [`wedge_next_job_on`] is still waiting for its job.
pub fn wedge_armed() -> bool {
    WEDGE_NEXT_JOB.load(Ordering::Acquire) != 0
}

fn wedge() {
    interrupts::disable();
    let until_ns = time::since_boot_ns() + WEDGE_SPIN_MS.load(Ordering::Acquire) * 1_000_000;
    while time::since_boot_ns() < until_ns {
        core::hint::spin_loop();
    }
    interrupts::enable();
}

/// Parks this CPU if it was taken out of service.
fn park_if_out_of_service(percpu: &PerCpu) {
    if percpu.out_of_service.load(Ordering::Acquire) {
        park(percpu);
    }
}

/// Reloads CR3 (this CPU may have missed shootdowns) and halts for good with
/// interrupts off. Touches no lock: it may run in an NMI that interrupted a holder.
fn park(percpu: &PerCpu) -> ! {
    x86_64::instructions::tlb::flush_all();
    percpu.parked.store(true, Ordering::Release);
    interrupts::halt_forever()
}

/// The NMI handler's question (`idt.rs`): parks this CPU, never returning, if it was
/// taken out of service (the NMI [`take_out_of_service`] sends); else returns and the
/// NMI is reported as fatal, as before.
pub fn on_nmi() {
    if let Some(c) = this_cpu() {
        park_if_out_of_service(c);
    }
}

/// Takes AP `c` out of service: no more work, shootdown waits or wake-ups go to it,
/// and an NMI makes it park. Reported once. Never the boot CPU.
fn take_out_of_service(c: &PerCpu, what: &str, waited_ns: u64) {
    let bit = 1u64 << c.index;
    if c.index == 0 || IN_SERVICE.fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
        return;
    }
    c.out_of_service.store(true, Ordering::SeqCst);
    // The flag is stored before the NMI is sent (the x2APIC path fences; an xAPIC ICR
    // write is an uncached store, ordered after it).
    let _ = apic::send_nmi(c.apic_id);
    log::error!("smp: cpu {} (apic {}) did not answer {what} in {} ms: taken out of service",
        c.index, c.apic_id, waited_ns / 1_000_000);
}

/// Sends SHOOTDOWN_VECTOR to the CPUs in `targets` (bit i = CPU index i) and waits
/// until each reloaded CR3 or was taken out of service (the boot CPU: until it did).
/// Call with `SHOOTDOWN_LOCK` held.
fn shoot_and_wait(targets: u64, what: &str) {
    let generation = SHOOTDOWN_GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    let send = |mask: u64| {
        for index in (0..MAX_CPUS).filter(|&i| mask & (1 << i) != 0) {
            if let Some(c) = cpu(index) {
                let _ = apic::send_ipi(c.apic_id, SHOOTDOWN_VECTOR);
            }
        }
    };
    send(targets);
    let start_ns = time::since_boot_ns();
    let mut wait = AnswerWait::new(start_ns, targets, 1, bounds());
    let mut gave_up = false;
    loop {
        let now_ns = time::since_boot_ns();
        let in_service = IN_SERVICE.load(Ordering::Acquire);
        let answered = (0..MAX_CPUS)
            .filter(|&i| wait.pending() & (1 << i) != 0)
            .filter(|&i| in_service & (1 << i) == 0 || cpu(i).is_none_or(|c| c.shootdowns_seen() >= generation))
            .fold(0u64, |m, i| m | 1 << i);
        match wait.poll(now_ns, answered) {
            Step::Done => break,
            Step::Wait => core::hint::spin_loop(),
            Step::Resend(mask) => send(mask),
            Step::GiveUp(mask) => {
                gave_up = true;
                for c in (0..MAX_CPUS).filter(|&i| mask & (1 << i) != 0).filter_map(cpu) {
                    take_out_of_service(c, what, wait.elapsed_ns(now_ns));
                }
            }
            Step::Overdue(_) => {
                log::warn!("smp: the boot CPU has not answered {what} in {} ms; waiting on", wait.elapsed_ns(now_ns) / 1_000_000);
            }
        }
    }
    if !gave_up {
        let took_ns = time::since_boot_ns().saturating_sub(start_ns);
        SLOWEST_ANSWER_NS.fetch_max(took_ns, Ordering::Relaxed);
        if took_ns >= bounds().resend_ns {
            log::warn!("smp: {what} was answered only after {} us (sent again meanwhile)", took_ns / 1000);
        }
    }
}

/// Checks that AP `index` still answers IPIs (a shootdown: reloading CR3 is harmless);
/// one that does not is taken out of service. Skipped (true) while a shootdown is in
/// progress, which checks the same. Returns whether the CPU is in service.
fn probe(index: usize) -> bool {
    if let Some(_guard) = SHOOTDOWN_LOCK.try_lock() {
        if in_service(index) {
            shoot_and_wait(1 << index, "a liveness probe during its job");
        }
    }
    in_service(index)
}

fn on_ap_tick(_vector: u8) {
    if let Some(c) = this_cpu() {
        park_if_out_of_service(c);
        c.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

fn on_wake(_vector: u8) {
    if let Some(c) = this_cpu() {
        park_if_out_of_service(c);
    }
}

fn on_shootdown(_vector: u8) {
    // The generation is read before the flush: every generation up to it was taken
    // after its page-table change, so this flush covers them all. (Read after, a
    // leftover resent IPI could vouch for a change made after its flush.)
    let generation = SHOOTDOWN_GENERATION.load(Ordering::Acquire);
    x86_64::instructions::tlb::flush_all();
    if let Some(c) = this_cpu() {
        park_if_out_of_service(c);
        c.shootdowns_seen.fetch_max(generation, Ordering::AcqRel);
    }
}

/// Makes every other CPU in service drop its TLB entries (after a page-permission
/// change the caller has already flushed locally) and waits until each has, or was
/// taken out of service for not answering within the bound. Does nothing while only
/// one CPU is online.
pub fn flush_tlb_others() {
    if ONLINE.load(Ordering::Acquire) <= 1 {
        return;
    }
    let _guard = SHOOTDOWN_LOCK.lock();
    let me = this_cpu().map_or(0, |c| c.index as usize);
    let targets = IN_SERVICE.load(Ordering::Acquire) & !(1u64 << me);
    if targets != 0 {
        shoot_and_wait(targets, "a TLB shootdown");
    }
}

/// Vectors only the SMP code uses (not counted as the BSP's latest interrupt).
pub fn is_smp_vector(vector: u8) -> bool {
    matches!(vector, AP_TIMER_VECTOR | WAKE_VECTOR | SHOOTDOWN_VECTOR)
}
