//! A decode team: the kernel pool's other threads held for the length of
//! one decoded token, waiting for [`share_out`](super::share_out)'s passes
//! by spinning instead of sleeping.
//!
//! Why: a token of a 0.4B model is ~120 passes of products (a few to a few
//! hundred microseconds each) separated by serial work (norms, wkv, ...).
//! Between passes rayon's idle threads go to sleep, and waking one takes
//! microseconds — measured, summed over a 0.4B int8 token: 0.1–0.4 ms from
//! a pass's start to the second thread's first task, and 0.8–1.1 ms on
//! this VM in the state where its memory reads fastest, ~7% of that token.
//! With the team, in-process alternating blocks of 8 tokens (0.4B, 2
//! threads, 24 blocks per run): int8 decode 1.00×, 1.02×, 1.04× and 1.04×
//! as fast as without, bf16 1.00×, 1.00×, 1.02× and 1.02× (the larger
//! gains in the faster state).
//!
//! Between passes a helper has nothing to do while the publisher does the
//! step's serial work; it spends that time fetching the first weights of
//! its share of the next pass into its cache (see [`PassPlan`]).
//!
//! A pass is published as a closure of the thread's index; helpers that
//! see it open join it. The publisher runs index 0 itself and then closes
//! the pass, waiting only for helpers that joined. So a pass completes
//! even if no helper ever arrives (they may be busy elsewhere in the pool,
//! e.g. with another model's step): `share_out`'s closures take every
//! item left over.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A published pass: thread index → its share of the work.
type Job<'a> = dyn Fn(usize) + Sync + 'a;

/// `pass` word: bit 63 "open", bits 32–62 the pass number, bits 0–31 the
/// helpers inside it.
const OPEN: u64 = 1 << 63;
const ID_ONE: u64 = 1 << 32;
const ACTIVE: u64 = ID_ONE - 1;

/// Spins (`spin_loop`) of an idle wait before it falls back to yielding
/// the CPU between checks: ~10–50 µs, longer than most gaps between passes,
/// short enough that a step stalled on something slow (a page fault on a
/// mapped weight, a sampler) lets other threads run.
const SPINS: u32 = 4096;

/// Passes of a step that a [`PassPlan`] remembers (0.4B: 145 per token).
const PLAN_PASSES: usize = 1024;

/// Helpers per pass that a [`PassPlan`] remembers (8 kernel threads).
const PLAN_HELPERS: usize = 7;

/// Most bytes a helper fetches ahead between two passes (two tasks' worth,
/// see `TASK_BYTES` in the kernels module; a quarter of this core's L2 on
/// the Rapids VM). Against 256 KiB (one task): 0.2–1.5% faster decode,
/// int8 and bf16, 4 paired runs.
const LOOK_AHEAD_MAX: usize = 512 << 10;

/// Where each helper's share of each pass of a decode step begins in
/// memory, as the model's last step recorded it, so that a helper can
/// fetch the start of its next share while the publisher does the serial
/// work between passes (norms, mixes, the wkv step: ~2 ms of a 0.4B token
/// with the memory idle). A decode step runs the same passes over the same
/// weights every token, so the last step's record is this step's plan; a
/// wrong guess (another model's step in between, a step without logits)
/// only fetches bytes nobody reads. Fetched only while the model's
/// software prefetch is on ([`super::prefetch`]), which its tuner measures
/// with this included. Measured on the Rapids VM (0.4B, 2 threads,
/// in-process alternating blocks of 8 tokens, 5 runs each): int8 decode
/// 1.2–2.1% and bf16 0.8–2.2% faster; the publisher fetching its own next
/// share while it waits at a pass's end added nothing measurable (0–0.7%),
/// nor did the helper fetching the publisher's share as well.
pub struct PassPlan {
    /// `[pass][helper]` → (address, bytes), relaxed atomics: a torn pair
    /// only misdirects a prefetch, which never faults.
    starts: Box<[[AtomicUsize; 2]]>,
}

impl Default for PassPlan {
    fn default() -> Self {
        PassPlan {
            starts: (0..PLAN_PASSES * PLAN_HELPERS)
                .map(|_| [AtomicUsize::new(0), AtomicUsize::new(0)])
                .collect(),
        }
    }
}

impl std::fmt::Debug for PassPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassPlan")
    }
}

impl PassPlan {
    fn slot(&self, pass: u64, helper: usize) -> Option<&[AtomicUsize; 2]> {
        let (pass, h) = (usize::try_from(pass).ok()?, helper.checked_sub(1)?);
        (pass < PLAN_PASSES && h < PLAN_HELPERS).then(|| &self.starts[pass * PLAN_HELPERS + h])
    }

    /// Records where helper `i + 1`'s share of pass `pass` begins:
    /// `regions[i]` = (address, bytes), (0, 0) for nothing to fetch.
    fn record(&self, pass: u64, regions: &[(usize, usize)]) {
        for h in 1..=PLAN_HELPERS {
            if let Some(slot) = self.slot(pass, h) {
                let (addr, len) = regions.get(h - 1).copied().unwrap_or((0, 0));
                slot[0].store(addr, Ordering::Relaxed);
                slot[1].store(len, Ordering::Relaxed);
            }
        }
    }

    /// Where `helper`'s share of pass `pass` began in the last step.
    pub fn planned(&self, pass: u64, helper: usize) -> (usize, usize) {
        self.slot(pass, helper).map_or((0, 0), |s| {
            (s[0].load(Ordering::Relaxed), s[1].load(Ordering::Relaxed))
        })
    }
}

/// The shared state of one [`with_team`] call.
pub(super) struct Team<'p> {
    plan: &'p PassPlan,
    pass: AtomicU64,
    /// The open pass's closure, lifetime erased: written only while no
    /// helper is inside a pass, read only by helpers inside it.
    job: JobSlot,
    /// Set when the step ends: helpers return to the pool.
    quit: AtomicBool,
    /// A helper's panic, re-raised by the publisher.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

struct JobSlot(UnsafeCell<Option<*const Job<'static>>>);

// SAFETY: the slot is written by the publisher only between passes (no
// helper inside, none can enter: the pass is closed) and read by helpers
// only inside an open pass (see `Team::serve` and `Team::run`).
unsafe impl Sync for JobSlot {}

thread_local! {
    /// The team the current thread publishes to, while `with_team` runs.
    static CURRENT: Cell<*const Team<'static>> = const { Cell::new(std::ptr::null()) };
}

/// Idle-waits one round: spins first, then yields.
fn idle(rounds: &mut u32) {
    if *rounds < SPINS {
        *rounds += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

impl Team<'_> {
    /// A helper's loop: joins every pass it sees open, until `quit`.
    fn serve(&self, me: usize) {
        let mut seen = 0;
        let mut rounds = 0;
        loop {
            let cur = self.pass.load(Ordering::Acquire);
            let id = (cur & !OPEN) >> 32;
            if cur & OPEN != 0 && id != seen {
                // Enter, unless the pass closed, changed or took in
                // another helper meanwhile (then look again).
                if self
                    .pass
                    .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    seen = id;
                    // SAFETY: set before the pass opened; the publisher
                    // keeps the closure alive until every helper that
                    // entered has left (`run`).
                    let job = unsafe { &*(*self.job.0.get()).expect("an open pass has a job") };
                    if let Err(p) = catch_unwind(AssertUnwindSafe(|| job(me))) {
                        *self.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                    }
                    self.pass.fetch_sub(1, Ordering::AcqRel);
                    self.look_ahead(id, me);
                }
                rounds = 0;
                continue;
            }
            if self.quit.load(Ordering::Acquire) {
                return;
            }
            idle(&mut rounds);
        }
    }

    /// Having left pass `done`, fetches the start of helper `me`'s share
    /// of the next pass as the plan has it, into this core's L2, until
    /// that pass opens or the step ends (see [`PassPlan`]).
    fn look_ahead(&self, done: u64, me: usize) {
        if super::prefetch::distance() == 0 {
            return;
        }
        let (addr, len) = self.plan.planned(done + 1, me);
        let mut off = 0;
        while off < len.min(LOOK_AHEAD_MAX) {
            // 1 KiB at a time, then a look at the pass word.
            for line in (off..off + 1024).step_by(64) {
                super::prefetch::prefetch_l2(addr.wrapping_add(line));
            }
            off += 1024;
            if (self.pass.load(Ordering::Relaxed) & !OPEN) >> 32 != done
                || self.quit.load(Ordering::Relaxed)
            {
                break;
            }
        }
    }

    /// Runs `job(0)` here and `job(i)` on each helper that joins in time;
    /// returns once all of them are done. `regions[i]` is where helper
    /// `i + 1`'s share of the pass begins in memory (address, bytes), for
    /// the next step's [`PassPlan`]; empty when the pass reads no weights.
    pub(super) fn run(&self, job: &Job<'_>, regions: &[(usize, usize)]) {
        // SAFETY: only the lifetime is erased; the pointer is out of use
        // before this function returns (the pass is closed and empty).
        let erased: *const Job<'static> =
            unsafe { std::mem::transmute::<&Job<'_>, &'static Job<'static>>(job) };
        // SAFETY: no pass is open and none is occupied (the last `run`
        // left it closed and empty), so no helper reads the slot.
        unsafe { *self.job.0.get() = Some(erased) };
        let id = ((self.pass.load(Ordering::Relaxed) >> 32) + 1) & (ACTIVE >> 1);
        self.plan.record(id, regions);
        self.pass.store(OPEN | (id << 32), Ordering::Release);
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        // Close; then wait for the helpers inside to leave.
        let mut cur = self.pass.fetch_and(!OPEN, Ordering::AcqRel) & !OPEN;
        let mut rounds = 0;
        while cur & ACTIVE != 0 {
            idle(&mut rounds);
            cur = self.pass.load(Ordering::Acquire);
        }
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            resume_unwind(p);
        }
    }
}

/// The team the current thread publishes to, if `with_team` is running.
pub(super) fn current() -> Option<&'static Team<'static>> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: set only while `with_team` holds the team alive on this
    // thread, and cleared before it drops it.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Runs `f` (on a kernel pool thread) with the pool's other threads held
/// until it returns, waiting for its passes of parallel products by
/// spinning rather than asleep (a decode team: a token is ~120 short
/// passes, and waking a sleeping thread for each cost 0.1–1.1 ms of a 0.4B
/// token). Without a second thread, or with more kernel threads than the
/// machine runs at once (spinning would then take CPU from the work), it
/// just runs `f`.
pub fn with_team<R: Send>(plan: &PassPlan, f: impl FnOnce() -> R + Send) -> R {
    let n = super::threads();
    if n < 2 || n > super::threads::cpus() {
        return super::install(f);
    }
    super::install(|| {
        if current().is_some() {
            return f();
        }
        let team = Team {
            plan,
            pass: AtomicU64::new(0),
            job: JobSlot(UnsafeCell::new(None)),
            quit: AtomicBool::new(false),
            panic: Mutex::new(None),
        };
        /// Lets the helpers go and unregisters the team, also when `f`
        /// panics (the scope then waits for the helpers to return).
        struct Release<'t, 'p>(&'t Team<'p>);
        impl Drop for Release<'_, '_> {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(std::ptr::null()));
                self.0.quit.store(true, Ordering::Release);
            }
        }
        let ks = super::active();
        let mut out = None;
        rayon::scope(|s| {
            for me in 1..n {
                let team = &team;
                s.spawn(move |_| super::with_set(ks, || team.serve(me)));
            }
            let _release = Release(&team);
            // Lifetimes erased: `current()` hands the team out only while
            // this scope keeps it (and the plan it borrows) alive.
            let erased = (&team as *const Team<'_>).cast::<Team<'static>>();
            CURRENT.with(|c| c.set(erased));
            out = Some(f());
        });
        out.expect("the scope ran f")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn passes_run_every_share_once_and_helpers_join() {
        crate::kernels::set_threads(2);
        let joined = AtomicUsize::new(0);
        let plan = PassPlan::default();
        with_team(&plan, || {
            let team = current().expect("a team with 2 threads");
            for pass in 0..50 {
                let runs: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
                let region = [(0x1000 * (pass + 1), 64 * pass)];
                team.run(
                    &|me| {
                        runs[me].fetch_add(1, Ordering::Relaxed);
                        if me == 0 {
                            // Give the helper time to join (it may be waking).
                            let t0 = std::time::Instant::now();
                            while runs[1].load(Ordering::Relaxed) == 0
                                && t0.elapsed() < std::time::Duration::from_millis(20)
                            {
                                std::hint::spin_loop();
                            }
                        }
                    },
                    &region,
                );
                assert_eq!(runs[0].load(Ordering::Relaxed), 1, "pass {pass}");
                let helper = runs[1].load(Ordering::Relaxed);
                assert!(helper <= 1, "pass {pass}: the helper ran it {helper} times");
                joined.fetch_add(helper, Ordering::Relaxed);
            }
        });
        // Every pass waited up to 20 ms for the helper: a helper that joins
        // none of them means the team does nothing.
        assert!(joined.load(Ordering::Relaxed) > 40, "{joined:?} of 50");
        assert!(current().is_none(), "the team is unregistered afterwards");
        // Passes are numbered from 1 in every step, and the plan keeps each
        // pass's helper region for the next step.
        for pass in 0..50 {
            let want = (0x1000 * (pass + 1), 64 * pass);
            assert_eq!(plan.planned(pass as u64 + 1, 1), want, "pass {pass}");
        }
        assert_eq!(plan.planned(51, 1), (0, 0), "no 51st pass");
        assert_eq!(plan.planned(1, 2), (0, 0), "no second helper");
        assert_eq!(plan.planned(PLAN_PASSES as u64 + 5, 1), (0, 0));
    }

    #[test]
    fn a_panic_in_a_pass_reaches_the_caller_and_frees_the_helpers() {
        crate::kernels::set_threads(2);
        let caught = catch_unwind(|| {
            with_team(&PassPlan::default(), || {
                let team = current().expect("a team");
                team.run(
                    &|me| {
                        if me == 0 {
                            panic!("boom");
                        }
                    },
                    &[],
                );
            })
        });
        assert!(caught.is_err());
        // The pool still works (no helper left spinning in a dead team).
        let v = with_team(&PassPlan::default(), || 7);
        assert_eq!(v, 7);
    }
}
