//! Fibers: one kernel stack per workload and a cooperative switch, so a workload can be
//! paused in the middle of its wasm code (from wasmtime's epoch callback) and resumed
//! later. wasmtime's own async fibers are not usable here: wasmtime-fiber picks its
//! unix backend (libc, rustix, std) because `cfg(unix)` holds for this target.
//!
//! The switch saves the callee-saved registers, MXCSR and the x87 control word on the
//! old stack and swaps stack pointers; the caller swaps wasmtime's TLS slots. A fiber
//! runs on one CPU at a time (the scheduler hands each slice to one CPU and waits for
//! it), and may run its next slice on another: the running fiber and the TLS slots
//! are per CPU.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::arch::global_asm;
use core::sync::atomic::Ordering;

use super::platform::tls;

global_asm!(
    r#"
    .section .text.gridos_fiber, "ax"
    .global gridos_fiber_switch
gridos_fiber_switch:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    sub rsp, 8
    stmxcsr [rsp]
    fnstcw [rsp + 4]
    mov [rdi], rsp
    mov rsp, rsi
    ldmxcsr [rsp]
    fldcw [rsp + 4]
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    .global gridos_fiber_start
gridos_fiber_start:
    mov rdi, r12
    call {main}
    ud2
    .text
"#,
    main = sym fiber_main,
);

extern "C" {
    /// Saves the current context at `*save_sp` and continues the one at `next_sp`.
    fn gridos_fiber_switch(save_sp: *mut usize, next_sp: usize);
    fn gridos_fiber_start();
}

/// Bytes of stack per fiber: wasm may use `runtime::MAX_WASM_STACK`, plus host calls.
pub const STACK_BYTES: usize = 1 << 20;

pub struct Fiber {
    stack: Vec<u64>,
    sp: usize,
    /// wasmtime's TLS values while this fiber is switched out.
    tls: [*mut u8; 2],
    body: Option<Box<dyn FnOnce()>>,
    done: bool,
    /// Where the scheduler's context is saved while this fiber runs.
    return_sp: usize,
}

/// The fiber running now on this CPU (null on the CPU's own stack).
fn current() -> &'static core::sync::atomic::AtomicPtr<u8> {
    static EARLY: core::sync::atomic::AtomicPtr<u8> = core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
    crate::arch::x86_64::smp::this_cpu().map_or(&EARLY, |c| &c.fiber)
}

extern "C" fn fiber_main(fiber: *mut Fiber) -> ! {
    // SAFETY: `resume` passed a pointer to a live, boxed fiber that it is running.
    let f = unsafe { &mut *fiber };
    if let Some(body) = f.body.take() {
        body();
    }
    f.done = true;
    suspend();
    unreachable!("a finished fiber was resumed");
}

impl Fiber {
    pub fn new(body: Box<dyn FnOnce()>) -> Box<Fiber> {
        let mut stack = alloc::vec![0u64; STACK_BYTES / 8];
        // The initial frame must end on a 16-byte boundary (the SysV call alignment).
        let mut top = stack.len();
        if (stack.as_ptr() as usize + top * 8) % 16 != 0 {
            top -= 1;
        }
        // Initial frame, low to high: csr, r15, r14, r13, r12 (= fiber), rbx, rbp, ret.
        let mut f = Box::new(Fiber { stack: Vec::new(), sp: 0, tls: [core::ptr::null_mut(); 2], body: Some(body), done: false, return_sp: 0 });
        let me = &mut *f as *mut Fiber as u64;
        let frame = &mut stack[top - 8..];
        frame[0] = 0x037f_u64 << 32 | 0x1f80; // MXCSR default | x87 control word default
        frame[1] = 0;
        frame[2] = 0;
        frame[3] = 0;
        frame[4] = me;
        frame[5] = 0;
        frame[6] = 0; // rbp = 0 ends frame-pointer walks
        frame[7] = gridos_fiber_start as *const () as usize as u64;
        f.sp = &stack[top - 8] as *const u64 as usize;
        assert!(f.sp % 16 == 0);
        f.stack = stack;
        f
    }

    /// A finished fiber that holds nothing: stands in for one that can no longer be
    /// touched (its CPU was taken out of service in the middle of a slice, so its stack
    /// may still be in use; the scheduler leaks it instead of dropping it).
    pub fn finished() -> Box<Fiber> {
        Box::new(Fiber { stack: Vec::new(), sp: 0, tls: [core::ptr::null_mut(); 2], body: None, done: true, return_sp: 0 })
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Runs the fiber until it suspends or finishes. Must be called from the scheduler.
    pub fn resume(&mut self) {
        assert!(!self.done, "resuming a finished fiber");
        // This CPU's record: only this CPU touches it, here and in `suspend`.
        let current = current();
        assert!(current.load(Ordering::Relaxed).is_null(), "nested fiber resume");
        current.store(self as *mut Fiber as *mut u8, Ordering::Relaxed);
        let tls = tls();
        let saved = [tls[0].load(Ordering::Relaxed), tls[1].load(Ordering::Relaxed)];
        tls[0].store(self.tls[0], Ordering::Relaxed);
        tls[1].store(self.tls[1], Ordering::Relaxed);
        // SAFETY: `self.sp` is a context saved by the switch (or the initial frame) on
        // this fiber's own stack, which lives as long as `self`.
        unsafe { gridos_fiber_switch(&mut self.return_sp, self.sp) };
        // The fiber suspended on the CPU it was resumed on (it never migrates within
        // a slice), so `current` and `tls` are still this CPU's.
        self.tls = [tls[0].load(Ordering::Relaxed), tls[1].load(Ordering::Relaxed)];
        tls[0].store(saved[0], Ordering::Relaxed);
        tls[1].store(saved[1], Ordering::Relaxed);
        current.store(core::ptr::null_mut(), Ordering::Relaxed);
        if self.done {
            // Back on the scheduler's stack for good: the fiber's stack is free.
            self.stack = Vec::new();
        }
    }
}

/// Switches from the current fiber back to the scheduler; returns when resumed.
pub fn suspend() {
    // SAFETY: this CPU's current fiber is the running fiber (checked non-null), whose
    // `resume` frame waits at `return_sp` on this CPU's scheduler stack.
    unsafe {
        let f = current().load(Ordering::Relaxed) as *mut Fiber;
        assert!(!f.is_null(), "suspend outside a fiber");
        gridos_fiber_switch(&mut (*f).sp, (*f).return_sp);
    }
}
