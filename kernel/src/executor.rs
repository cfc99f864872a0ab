//! A small single-CPU async executor: tasks, wakers that interrupt handlers may
//! call, timers, and `hlt` when nothing is runnable.
//!
//! Waking never allocates: a waker sets the task's `scheduled` flag and the
//! global `RUNNABLE` flag, so device interrupt handlers can wake tasks. Timers
//! are checked on every loop turn; the periodic tick bounds how long the CPU
//! sleeps past a deadline (1 / TICK_HZ).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};

use spin::Mutex;

use crate::arch::x86_64::{interrupts, time};

type BoxedFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Task {
    name: &'static str,
    future: Mutex<Option<BoxedFuture>>,
    scheduled: AtomicBool,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.scheduled.store(true, Ordering::Release);
        RUNNABLE.store(true, Ordering::Release);
    }
}

static RUNNABLE: AtomicBool = AtomicBool::new(false);
/// Executor loop turns, and what the watchdog saw last (turns, seconds unchanged).
static TURNS: AtomicU64 = AtomicU64::new(0);
static WATCHDOG_SEEN_TURNS: AtomicU64 = AtomicU64::new(0);
static WATCHDOG_STALLED_S: AtomicU64 = AtomicU64::new(0);
/// Seconds without an executor turn before the watchdog reports where the CPU is.
const WATCHDOG_STALL_S: u64 = 10;
static SPAWNED: Mutex<Vec<Arc<Task>>> = Mutex::new(Vec::new());
static TIMERS: Mutex<BTreeMap<(u64, u64), Waker>> = Mutex::new(BTreeMap::new());
static NEXT_TIMER_ID: AtomicU64 = AtomicU64::new(0);
/// Work the loop does when nothing is runnable, before it halts (see [`set_idle_hook`]).
static IDLE_HOOK: spin::Once<fn()> = spin::Once::new();

/// Sets the one function the executor calls when no task is runnable, before it halts:
/// work worth doing only when the CPU has nothing better to do (the network's deferred
/// device notifications). It may make tasks runnable; the loop then turns again.
pub fn set_idle_hook(hook: fn()) {
    IDLE_HOOK.call_once(|| hook);
}

/// Starts `future` as a task; it first runs when the executor next turns.
pub fn spawn(name: &'static str, future: impl Future<Output = ()> + Send + 'static) {
    let task = Arc::new(Task { name, future: Mutex::new(Some(Box::pin(future))), scheduled: AtomicBool::new(true) });
    SPAWNED.lock().push(task);
    RUNNABLE.store(true, Ordering::Release);
}

/// Called once a second from the timer interrupt: when the executor has not turned
/// for `WATCHDOG_STALL_S` seconds (a task that never yields, a stuck driver), print
/// where the CPU was interrupted, so the stall can be found from the serial log.
pub fn watchdog_check() {
    let turns = TURNS.load(Ordering::Relaxed);
    if turns == 0 || turns != WATCHDOG_SEEN_TURNS.swap(turns, Ordering::Relaxed) {
        WATCHDOG_STALLED_S.store(0, Ordering::Relaxed);
        return;
    }
    let stalled = WATCHDOG_STALLED_S.fetch_add(1, Ordering::Relaxed) + 1;
    if stalled % WATCHDOG_STALL_S == 0 {
        use crate::arch::x86_64::idt;
        crate::kprintln!("WATCHDOG: executor stalled for {stalled} s; interrupted at:");
        idt::print_stack_walk(
            idt::LAST_IRQ_RIP.load(Ordering::Relaxed),
            idt::LAST_IRQ_RBP.load(Ordering::Relaxed),
        );
    }
}

/// Monotonic nanoseconds since boot, the executor's clock.
pub fn now_ns() -> u64 {
    time::since_boot_ns()
}

/// Nanoseconds the CPU spent halted with nothing runnable (interrupt handlers that
/// ran meanwhile included).
static IDLE_NS: AtomicU64 = AtomicU64::new(0);

/// Time the CPU has spent idle since boot; the rest of [`now_ns`] it was busy.
pub fn idle_ns() -> u64 {
    IDLE_NS.load(Ordering::Relaxed)
}

fn fire_due_timers() {
    let now = now_ns();
    let due: Vec<Waker> = interrupts::without(|| {
        let mut timers = TIMERS.lock();
        let mut due = Vec::new();
        while let Some(entry) = timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    });
    for waker in due {
        waker.wake();
    }
}

/// Runs tasks forever, halting the CPU while none is runnable.
pub fn run() -> ! {
    let mut tasks: Vec<Arc<Task>> = Vec::new();
    loop {
        TURNS.fetch_add(1, Ordering::Relaxed);
        fire_due_timers();
        tasks.append(&mut SPAWNED.lock());
        RUNNABLE.store(false, Ordering::Release);
        tasks.retain(|task| {
            if !task.scheduled.swap(false, Ordering::AcqRel) {
                return true;
            }
            let waker = Waker::from(Arc::clone(task));
            let mut cx = Context::from_waker(&waker);
            let mut slot = task.future.lock();
            let Some(future) = slot.as_mut() else { return false };
            match future.as_mut().poll(&mut cx) {
                Poll::Ready(()) => {
                    log::debug!("task {} finished", task.name);
                    *slot = None;
                    false
                }
                Poll::Pending => true,
            }
        });
        if !RUNNABLE.load(Ordering::Acquire) {
            if let Some(hook) = IDLE_HOOK.get() {
                hook();
            }
        }
        // Sleep until an interrupt if nothing became runnable meanwhile; `sti; hlt`
        // is atomic, so a wake-up from an interrupt cannot slip in between.
        interrupts::disable();
        if RUNNABLE.load(Ordering::Acquire) || next_timer_due() {
            interrupts::enable();
        } else {
            let halted_ns = now_ns();
            interrupts::enable_and_wait();
            IDLE_NS.fetch_add(now_ns().saturating_sub(halted_ns), Ordering::Relaxed);
        }
    }
}

fn next_timer_due() -> bool {
    TIMERS.lock().first_key_value().is_some_and(|(k, _)| k.0 <= now_ns())
}

/// A future that completes at `deadline_ns` on the executor's clock.
pub struct Sleep {
    deadline_ns: u64,
    id: u64,
}

/// Sleeps until `deadline_ns`.
pub fn sleep_until(deadline_ns: u64) -> Sleep {
    Sleep { deadline_ns, id: NEXT_TIMER_ID.fetch_add(1, Ordering::Relaxed) }
}

/// Sleeps for `ms` milliseconds.
pub fn sleep_ms(ms: u64) -> Sleep {
    sleep_until(now_ns().saturating_add(ms.saturating_mul(1_000_000)))
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if now_ns() >= self.deadline_ns {
            return Poll::Ready(());
        }
        let key = (self.deadline_ns, self.id);
        interrupts::without(|| TIMERS.lock().insert(key, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        let key = (self.deadline_ns, self.id);
        interrupts::without(|| TIMERS.lock().remove(&key));
    }
}

/// Most tasks one [`Event`] remembers at once: every port of an AHCI controller (32) or
/// namespace of an NVMe controller (16) may have a request waiting on its shared interrupt.
pub const EVENT_WAITERS_MAX: usize = 32;

/// A waker register that an interrupt handler can signal, for up to
/// [`EVENT_WAITERS_MAX`] waiting tasks (the namespaces or ports of one controller share
/// one interrupt, so one event).
///
/// `signal` sets a pending flag and wakes every registered task; each re-registers when
/// it is polled again. Wakers are only dropped at registration (task context, never in
/// an interrupt handler, where freeing a finished task could need the heap's lock): a
/// waker already held is kept; when the set is full the oldest is woken and replaced,
/// so a task still waiting re-registers and no wake-up is lost.
pub struct Event {
    pending: AtomicBool,
    wakers: Mutex<heapless::Vec<Waker, EVENT_WAITERS_MAX>>,
}

impl Event {
    pub const fn new() -> Event {
        Event { pending: AtomicBool::new(false), wakers: Mutex::new(heapless::Vec::new()) }
    }

    /// Marks the event and wakes its waiters. Safe to call from interrupt handlers.
    pub fn signal(&self) {
        self.pending.store(true, Ordering::Release);
        // The lock is only ever taken with interrupts disabled, so this cannot deadlock.
        for w in self.wakers.lock().iter() {
            w.wake_by_ref();
        }
    }

    /// Clears and returns the pending flag.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Whether the event is signalled (without clearing it).
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Registers `waker` to be woken by the next [`signal`](Self::signal).
    pub fn register_waker(&self, waker: &Waker) {
        let evicted = interrupts::without(|| {
            let mut wakers = self.wakers.lock();
            if wakers.iter().any(|w| w.will_wake(waker)) {
                return None;
            }
            let evicted = if wakers.is_full() { Some(wakers.remove(0)) } else { None };
            // Cannot fail: a slot was just freed if there was none.
            let _ = wakers.push(waker.clone());
            evicted
        });
        // Outside the lock and with interrupts on: the replaced task (finished, or
        // still waiting, then it registers again) may be freed here.
        if let Some(w) = evicted {
            w.wake();
        }
    }
}

impl Default for Event {
    fn default() -> Self {
        Event::new()
    }
}

/// Waits until `ready` says so or `deadline_ns` passes, then lets the other tasks
/// have a turn. `ready` registers the waker with whatever can make it true (events,
/// sockets) and reports whether it already is.
pub async fn wait_then_yield(deadline_ns: Option<u64>, mut ready: impl FnMut(&Waker) -> bool) {
    let mut sleep = deadline_ns.map(sleep_until);
    core::future::poll_fn(|cx| {
        if ready(cx.waker()) {
            return Poll::Ready(());
        }
        match sleep.as_mut() {
            Some(s) => Pin::new(s).poll(cx),
            None => Poll::Pending,
        }
    })
    .await;
    // Work may be due again at once (a full queue another task drains, a stream of
    // interrupts): without this turn, that other task would never run.
    yield_now().await;
}

/// Lets every other runnable task have a turn before continuing.
pub async fn yield_now() {
    let mut yielded = false;
    core::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Runs `future` for at most `ms` milliseconds; `None` if time ran out first.
pub async fn timeout<F: Future>(ms: u64, future: F) -> Option<F::Output> {
    let mut future = core::pin::pin!(future);
    let mut sleep = sleep_ms(ms);
    core::future::poll_fn(|cx| {
        if let Poll::Ready(v) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if Pin::new(&mut sleep).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
