//! The persistent thread pool every parallel kernel runs on.
//!
//! A dedicated rayon pool rather than rayon's global one: the global pool
//! can be configured only once, and only before anything in the process
//! (a dependency, a test) first uses it, so `--threads` could silently fail
//! to apply. This pool is built on first use with one thread per physical
//! core, and [`set_threads`] may rebuild it at any time.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::ThreadPool;

static POOL: Mutex<Option<Arc<ThreadPool>>> = Mutex::new(None);

/// The pool's thread count (0 until it is built), kept next to `POOL` so
/// that [`threads`] needs no lock: the layers ask it for every element-wise
/// pass and product (~30 times per layer of a decoded token), and the lock
/// and `Arc` clone of [`pool`] were ~2% of a 0.4B token's serial work.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// CPUs this process may run on ([`std::thread::available_parallelism`]),
/// read once: on Linux that call reads the cgroup's CPU quota files and the
/// affinity mask, measured at ~130 µs — paid on every decoded token when
/// [`super::with_team`] asked it each time.
pub fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Physical cores: on Linux the unique (physical id, core id) pairs in
/// /proc/cpuinfo (SMT siblings share a core's FMA units and memory path, so
/// a second thread per core adds little and costs hand-off time), capped by
/// the threads this process may use; elsewhere, or if that file says
/// nothing, [`std::thread::available_parallelism`].
pub fn physical_cores() -> usize {
    let logical = cpus();
    let physical = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .map(|text| count_cores(&text))
        .unwrap_or(0);
    if physical == 0 {
        logical
    } else {
        physical.min(logical)
    }
}

/// Unique (physical id, core id) pairs in a /proc/cpuinfo text; 0 if the
/// fields are absent (e.g. most ARM kernels).
fn count_cores(cpuinfo: &str) -> usize {
    let mut pairs = std::collections::BTreeSet::new();
    let (mut phys, mut core) = (None, None);
    for line in cpuinfo.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                pairs.insert((p, c));
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            match key.trim() {
                "physical id" => phys = Some(value.trim().to_string()),
                "core id" => core = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    pairs.len()
}

fn build(n: usize) -> Option<Arc<ThreadPool>> {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("quill-kernel-{i}"))
        .build()
    {
        Ok(p) => Some(Arc::new(p)),
        Err(e) => {
            eprintln!("quill: cannot start {n} kernel threads: {e}");
            None
        }
    }
}

/// Sets the number of kernel threads (`0` = one per physical core, see
/// [`physical_cores`]). Work already running finishes on the old pool.
/// If the threads cannot be started the previous pool is kept (and the
/// reason printed to stderr).
pub fn set_threads(n: usize) {
    let n = if n == 0 { physical_cores() } else { n };
    if let Some(p) = build(n) {
        let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
        THREADS.store(p.current_num_threads(), Ordering::Relaxed);
        *guard = Some(p);
    }
}

/// The pool, built with the default size on first use.
fn pool() -> Arc<ThreadPool> {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.as_ref() {
        return Arc::clone(p);
    }
    let p = build(physical_cores())
        .or_else(|| build(1))
        .expect("cannot start even one kernel thread");
    THREADS.store(p.current_num_threads(), Ordering::Relaxed);
    *guard = Some(Arc::clone(&p));
    p
}

/// Number of kernel threads.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => pool().current_num_threads(),
        n => n,
    }
}

/// Runs `f` on the kernel pool (directly if already on it), with the
/// caller's kernel set (see [`super::with_kernels`]) in force there. Rayon
/// parallel iterators inside `f` then use this pool. Wrapping a whole
/// forward pass in one `install` makes the many parallel products inside it
/// cheap forks instead of one cross-thread hand-off each.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let p = pool();
    if p.current_thread_index().is_some() {
        return f();
    }
    let ks = super::active();
    p.install(move || super::with_set(ks, f))
}

/// Runs `run` once on every item of `items`, across the kernel pool, so
/// that each thread works through one contiguous run of them and all
/// threads finish together.
///
/// Thread i starts at the front of its own share (the i-th of `threads()`
/// contiguous, equal-count shares; equal in weight for
/// [`share_out_reading`]) and moves forward; a thread whose share
/// is done takes items from the back of the others'. For decode's products
/// (items = row ranges in memory order) this keeps every thread on one
/// forward stream through the weights, as larger tasks would, while the
/// items can be small: two threads end at most one item apart, however
/// late one of them started. Measured on a 0.4B int8 decode (121 passes
/// per token), the sum over a token of the gaps between the threads'
/// finishing times: 1.0–1.4 ms with rayon's halving split of 512 KiB
/// tasks, 0.7–1.1 ms with this and 256 KiB items (of a 14–17 ms token).
///
/// Inside a decode step the shares go to the step's team (threads kept
/// spinning between passes, see [`super::with_team`]); elsewhere to the
/// pool through rayon.
pub(crate) fn share_out<T: Send>(items: Vec<T>, run: impl Fn(T) + Sync) {
    share_out_reading(items, |_| 1, |_| None, run)
}

/// [`share_out`] for items of uneven size that each read one run of
/// memory: the shares are equal in `weight(item)` (bytes of weights, say)
/// rather than in count, and `reads(item)` = (address, bytes) is, in a
/// decode team, where each helper's share begins, recorded for the next
/// step's look-ahead (see [`PassPlan`](super::PassPlan)).
pub(crate) fn share_out_reading<T: Send>(
    items: Vec<T>,
    weight: impl Fn(&T) -> usize,
    reads: impl Fn(&T) -> Option<(usize, usize)>,
    run: impl Fn(T) + Sync,
) {
    let n = items.len();
    assert!(n < 1 << 32, "share_out: more items than a share can count");
    let threads = threads().min(n);
    if threads <= 1 {
        items.into_iter().for_each(run);
        return;
    }
    // Thread i's share: items bounds[i]..bounds[i + 1].
    let bounds = share_bounds(&items.iter().map(weight).collect::<Vec<_>>(), threads);
    let team = super::team::current();
    let regions: Vec<(usize, usize)> = match team {
        Some(_) => bounds[1..threads]
            .iter()
            .map(|&b| reads(&items[b]).unwrap_or((0, 0)))
            .collect(),
        None => Vec::new(),
    };
    let slots = Slots(
        items
            .into_iter()
            .map(|t| UnsafeCell::new(Some(t)))
            .collect(),
    );
    let shares: Vec<Share> = bounds.windows(2).map(|b| Share::new(b[0], b[1])).collect();
    let take = |j: usize| {
        // SAFETY: a share hands out each index in it once (`Share::claim`
        // moves its front or back past the index atomically), and the
        // shares are disjoint, so no other thread takes slot j.
        if let Some(item) = unsafe { slots.take(j) } {
            run(item);
        }
    };
    let work = |me: usize| {
        while let Some(j) = shares[me].claim(true) {
            take(j);
        }
        for other in (1..threads).map(|d| (me + d) % threads) {
            while let Some(j) = shares[other].claim(false) {
                take(j);
            }
        }
    };
    match team {
        // Helpers with no share (fewer items than threads) only return.
        Some(team) => team.run(
            &|me| {
                if me < threads {
                    work(me)
                }
            },
            &regions,
        ),
        None => install(|| {
            use rayon::prelude::*;
            (0..threads).into_par_iter().with_max_len(1).for_each(work)
        }),
    }
}

/// Where each of `threads` shares of items with these weights begins, and
/// where the last ends (`threads + 1` indices): share i ends at the item
/// boundary nearest to i/threads of the total weight.
pub(super) fn share_bounds(weights: &[usize], threads: usize) -> Vec<usize> {
    let mut prefix = Vec::with_capacity(weights.len() + 1);
    prefix.push(0usize);
    for w in weights {
        prefix.push(prefix.last().copied().unwrap_or(0).saturating_add(*w));
    }
    let total = prefix.last().copied().unwrap_or(0);
    let mut bounds: Vec<usize> = (0..=threads)
        .map(|i| {
            let target = (total as u128 * i as u128 / threads as u128) as usize;
            // The first boundary at or past the target, or the one before
            // it if that is nearer.
            let j = prefix.partition_point(|&p| p < target);
            if j > 0 && target - prefix[j - 1] < prefix[j] - target {
                j - 1
            } else {
                j
            }
        })
        .collect();
    bounds[threads] = weights.len();
    bounds
}

/// The items of [`share_out`], each taken out once.
struct Slots<T>(Vec<UnsafeCell<Option<T>>>);

// SAFETY: slots are only accessed through indices handed out once each by
// `Share::claim` (see `share_out`), and the items are `Send`.
unsafe impl<T: Send> Sync for Slots<T> {}

impl<T> Slots<T> {
    /// Takes item j out.
    ///
    /// # Safety
    /// No other thread may access slot j during the call.
    unsafe fn take(&self, j: usize) -> Option<T> {
        // SAFETY: exclusive access to slot j, by the caller's contract.
        unsafe { (*self.0[j].get()).take() }
    }
}

/// One thread's share of [`share_out`]'s items: the unclaimed indices
/// `front..back`, packed in one word so that a claim from either end is
/// one compare-and-swap.
struct Share(AtomicU64);

impl Share {
    fn new(front: usize, back: usize) -> Share {
        Share(AtomicU64::new(((back as u64) << 32) | front as u64))
    }

    /// The next index from the front (the owner) or the back (a helper).
    fn claim(&self, from_front: bool) -> Option<usize> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let (front, back) = (cur & 0xffff_ffff, cur >> 32);
            if front >= back {
                return None;
            }
            let (next, j) = if from_front {
                (cur + 1, front)
            } else {
                (cur - (1 << 32), back - 1)
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(j as usize),
                Err(now) => cur = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{count_cores, share_bounds, share_out, Share};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_share_hands_out_each_index_once_from_either_end() {
        let share = Share::new(3, 9);
        let mut got = Vec::new();
        for from_front in [true, false, false, true, true, false, true] {
            got.extend(share.claim(from_front));
        }
        assert_eq!(got, [3, 8, 7, 4, 5, 6]);
        assert_eq!(share.claim(true), None);
        assert_eq!(share.claim(false), None);
        assert_eq!(Share::new(4, 4).claim(true), None);
    }

    #[test]
    fn share_out_runs_every_item_exactly_once() {
        for n in [0, 1, 2, 3, 7, 1000] {
            let runs: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            share_out((0..n).collect(), |i: usize| {
                // Uneven items, so that threads finish their shares at
                // different times and take from each other's.
                if i.is_multiple_of(5) {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                runs[i].fetch_add(1, Ordering::Relaxed);
            });
            for (i, r) in runs.iter().enumerate() {
                assert_eq!(r.load(Ordering::Relaxed), 1, "item {i} of {n}");
            }
        }
    }

    #[test]
    fn shares_are_equal_in_weight_not_count() {
        // Equal weights: equal counts, as before weights existed.
        assert_eq!(share_bounds(&[1; 10], 2), [0, 5, 10]);
        assert_eq!(share_bounds(&[1; 7], 3), [0, 2, 4, 7]);
        // One heavy item and many light ones: the heavy one is a share.
        assert_eq!(share_bounds(&[8, 1, 1, 1, 1, 1, 1, 1, 1], 2), [0, 1, 9]);
        // Large items shrinking toward the middle and the end (as a decode
        // pass cuts them): the boundary falls at the middle in bytes.
        let w = [256, 256, 128, 64, 32, 16, 16, 256, 256, 128, 64, 32, 16, 16];
        assert_eq!(share_bounds(&w, 2), [0, 7, 14]);
        // The nearer boundary wins: 10 | 3 + 6 splits 19 at 10.
        assert_eq!(share_bounds(&[10, 3, 6], 2), [0, 1, 3]);
        assert_eq!(share_bounds(&[], 2), [0, 0, 0]);
        assert_eq!(share_bounds(&[0, 0, 0], 2), [0, 0, 3]);
    }

    #[test]
    fn counts_unique_core_pairs() {
        // Two sockets × two cores × two SMT threads = 4 physical cores.
        let mut text = String::new();
        for (p, c) in [
            (0, 0),
            (0, 0),
            (0, 1),
            (0, 1),
            (1, 0),
            (1, 0),
            (1, 1),
            (1, 1),
        ] {
            text.push_str(&format!(
                "processor\t: x\nphysical id\t: {p}\ncore id\t\t: {c}\n\n"
            ));
        }
        assert_eq!(count_cores(&text), 4);
        assert_eq!(count_cores("processor : 0\nBogoMIPS : 50\n\n"), 0);
    }
}
