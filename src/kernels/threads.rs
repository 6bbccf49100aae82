//! The persistent thread pool every parallel kernel runs on.
//!
//! A dedicated rayon pool rather than rayon's global one: the global pool
//! can be configured only once, and only before anything in the process
//! (a dependency, a test) first uses it, so `--threads` could silently fail
//! to apply. This pool is built on first use with one thread per physical
//! core, and [`set_threads`] may rebuild it at any time.

use std::sync::{Arc, Mutex};

use rayon::ThreadPool;

static POOL: Mutex<Option<Arc<ThreadPool>>> = Mutex::new(None);

/// Physical cores: on Linux the unique (physical id, core id) pairs in
/// /proc/cpuinfo (SMT siblings share a core's FMA units and memory path, so
/// a second thread per core adds little and costs hand-off time), capped by
/// the threads this process may use; elsewhere, or if that file says
/// nothing, [`std::thread::available_parallelism`].
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
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
        *POOL.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
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
    *guard = Some(Arc::clone(&p));
    p
}

/// Number of kernel threads.
pub fn threads() -> usize {
    pool().current_num_threads()
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

#[cfg(test)]
mod tests {
    use super::count_cores;

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
