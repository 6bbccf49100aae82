//! Reusable f32 buffers for the activations of sequence mode.
//!
//! A prefill chunk of 128 tokens used to allocate ~20 zeroed buffers of
//! t × C floats per layer (512 KiB each at C = 1024, 2 MiB for the ffn's
//! hidden layer), and the packed X of every product. The zeroing alone was
//! ~3% of the prefill's samples, all on the thread that runs the layers,
//! while the other kernel threads waited. A [`Scratch`] is taken from a
//! per-thread pool and goes back to it when dropped, so from the second
//! chunk (or layer) on the layers reuse buffers instead of allocating and
//! zeroing them.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers smaller than this many elements are not kept: allocating and
/// zeroing them costs about as much as finding one (decode's one-token rows).
const MIN_KEPT: usize = 1 << 14;

/// Elements a thread's pool may hold in all (128 MiB): enough for every
/// buffer a 1.5B-shaped layer has alive at once in a 256-token chunk
/// ([`crate::model::CHUNK`]).
const MAX_KEPT: usize = 1 << 25;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// An f32 buffer from the calling thread's pool, returned to the pool of
/// the thread that drops it. Dereferences to its elements.
#[derive(Default)]
pub struct Scratch(Vec<f32>);

impl Scratch {
    /// `n` elements whose values are whatever an earlier user left (always
    /// initialised, never read uninitialised memory): for outputs that are
    /// written in full before they are read.
    pub fn dirty(n: usize) -> Self {
        let mut v = take(n);
        if v.len() >= n {
            v.truncate(n);
        } else {
            v.resize(n, 0.0);
        }
        Scratch(v)
    }

    /// A copy of `x`.
    pub fn copy_of(x: &[f32]) -> Self {
        let mut v = take(x.len());
        v.clear();
        v.extend_from_slice(x);
        Scratch(v)
    }
}

/// The smallest pooled buffer that holds `n` elements (its contents as
/// left), or a new empty one with room for them.
fn take(n: usize) -> Vec<f32> {
    if n >= MIN_KEPT {
        let found = POOL
            .try_with(|p| {
                let mut p = p.borrow_mut();
                let best = p
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.capacity() >= n)
                    .min_by_key(|(_, v)| v.capacity())
                    .map(|(i, _)| i);
                best.map(|i| p.swap_remove(i))
            })
            .ok()
            .flatten();
        if let Some(v) = found {
            return v;
        }
    }
    Vec::with_capacity(n)
}

/// Frees the calling thread's pooled buffers. The pool serves one
/// sequence-mode call (chunk after chunk, layer after layer); kept after
/// it, it would stay resident (up to 128 MiB; 29 MB after a 512-token 0.4B
/// prefill) through the decoding that follows, which pools nothing (its
/// rows are below the pool's minimum size).
pub fn release_pool() {
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        p.clear();
        p.shrink_to_fit();
    });
}

/// Elements the calling thread's pool holds (for tests and diagnostics).
pub fn pooled_elements() -> usize {
    POOL.try_with(|p| p.borrow().iter().map(Vec::capacity).sum())
        .unwrap_or(0)
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() < MIN_KEPT {
            return;
        }
        // During thread teardown the pool may be gone: the buffer is then
        // simply freed.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            let held: usize = p.iter().map(Vec::capacity).sum();
            if held + v.capacity() <= MAX_KEPT {
                p.push(v);
            }
        });
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a Scratch {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Scratch").field(&self.0.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized_as_asked() {
        let n = MIN_KEPT * 2;
        let a = Scratch::dirty(n);
        let ptr = a.as_ptr();
        drop(a);
        // The same allocation comes back, shortened, with old values kept.
        let mut b = Scratch::dirty(n - 5);
        assert_eq!((b.as_ptr(), b.len()), (ptr, n - 5));
        b.fill(7.0);
        drop(b);
        // Growing past the old length keeps the old values and zeroes
        // only the new tail.
        let g = Scratch::dirty(n);
        assert_eq!(g.as_ptr(), ptr);
        assert!(g[..n - 5].iter().all(|&v| v == 7.0) && g[n - 5..].iter().all(|&v| v == 0.0));
        drop(g);
        let c = Scratch::copy_of(&[1.0, 2.0, 3.0]);
        assert_eq!(&c[..], &[1.0, 2.0, 3.0]);
        drop(c);
        let c = Scratch::copy_of(&vec![2.0; n]);
        assert_eq!((c.as_ptr(), c.len()), (ptr, n));
        assert!(c.iter().all(|&v| v == 2.0));
        drop(c);
        // Best fit: a smaller request takes the smaller of two buffers.
        let big = Scratch::dirty(n * 4);
        let (bp, sp) = (big.as_ptr(), Scratch::dirty(n).as_ptr());
        drop(big);
        assert_eq!(Scratch::dirty(n).as_ptr(), sp);
        assert_eq!(Scratch::dirty(n * 3).as_ptr(), bp);
    }

    #[test]
    fn releasing_the_pool_frees_what_it_held() {
        drop(Scratch::dirty(MIN_KEPT * 3));
        assert!(pooled_elements() >= MIN_KEPT * 3);
        release_pool();
        assert_eq!(pooled_elements(), 0);
        // The pool fills again afterwards.
        drop(Scratch::dirty(MIN_KEPT));
        assert!(pooled_elements() >= MIN_KEPT);
    }
}
