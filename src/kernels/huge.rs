//! Memory on transparent huge pages for the weights the engine streams.
//!
//! Why: streaming weights, each 4 KiB page is a TLB miss and a point where
//! the hardware prefetcher stops. On this machine kind (THP in `madvise`
//! mode) a plain sum read 30.4 GB/s from 4 KiB pages and 34.9 from huge
//! pages, the panel kernel 27.9 and 31.8 (interleaved passes, 2 threads).

use std::sync::{Arc, Mutex, Weak};

/// One huge page.
const HUGE_PAGE: usize = 2 << 20;

/// Size of an arena block that small buffers share (`HugeBuf`).
const BLOCK: usize = 64 << 20;

/// Asks the kernel to back `[start, start + bytes)` with transparent huge
/// pages (`MADV_HUGEPAGE`). Only pages not yet touched are affected: the
/// advice changes how a page is first faulted in, not pages already there.
/// Elsewhere than on Linux the hint is skipped.
fn advise_huge_pages(start: usize, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let (a, b) = (start.next_multiple_of(PAGE), (start + bytes) / PAGE * PAGE);
        if b > a {
            // SAFETY: callers pass memory they own; [a, b) is page-aligned
            // inside it, and MADV_HUGEPAGE only changes how the kernel backs
            // the pages, never their contents. Failure (THP disabled) is
            // harmless, so its result is ignored.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

/// A zeroed vector of `len` elements on huge pages where the OS grants
/// them (the read-bandwidth probe's buffer; see `HugeBuf` for weights).
/// Meant for large buffers, which the allocator maps fresh (untouched).
pub fn huge_page_vec<T: Copy + Default>(len: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    advise_huge_pages(v.as_ptr() as usize, len * std::mem::size_of::<T>());
    v.resize(len, T::default());
    v
}

/// A fresh anonymous map whose usable part starts on a 2 MiB boundary and
/// is advised for huge pages before anything touches it.
struct Block {
    /// Owns the pages (unmapped on drop).
    _map: memmap2::MmapMut,
    /// First byte of the aligned, usable part.
    base: *mut u8,
    /// Usable bytes from `base`.
    len: usize,
}

// SAFETY: a Block is plain memory; the buffers carved out of it are
// disjoint and each is written by its owner only before it is shared.
unsafe impl Send for Block {}
// SAFETY: as above.
unsafe impl Sync for Block {}

impl Block {
    fn new(len: usize) -> Block {
        let len = len.max(1).next_multiple_of(HUGE_PAGE);
        // Over-map by one huge page so an aligned start fits; the unused
        // ends are never touched, so they cost address space only.
        let mut map = memmap2::MmapMut::map_anon(len + HUGE_PAGE).unwrap_or_else(|e| {
            panic!("cannot map {len} bytes of memory for weights: {e}");
        });
        let start = map.as_mut_ptr();
        let base = start.wrapping_add(start.align_offset(HUGE_PAGE));
        advise_huge_pages(base as usize, len);
        Block {
            _map: map,
            base,
            len,
        }
    }
}

/// The block small buffers are currently carved from, and its next free
/// byte. Weak: a block lives only as long as buffers in it do.
static CURRENT: Mutex<Option<(Weak<Block>, usize)>> = Mutex::new(None);

/// Owned elements on huge pages, for the weights the engine streams.
///
/// Why not the ordinary allocator: a huge page backs only an aligned 2 MiB
/// range none of whose pages has been touched yet, and the allocator
/// recycles freed heap memory whose pages were already faulted in as
/// 4 KiB pages (measured: of a model's 8 MiB matrices copied after loading
/// temporaries, 1 in 16 got huge pages). So every buffer comes from a fresh
/// map, aligned and advised before its first touch. Buffers of up to half
/// a block share 64 MiB blocks (a 64 KiB matrix must not cost a whole huge
/// page of its own), larger ones get a map each.
pub struct HugeBuf<T: Copy> {
    /// Keeps the memory mapped.
    _block: Arc<Block>,
    ptr: std::ptr::NonNull<T>,
    len: usize,
}

// SAFETY: a HugeBuf owns its elements like a Vec does.
unsafe impl<T: Copy + Send> Send for HugeBuf<T> {}
// SAFETY: as above; shared access only reads.
unsafe impl<T: Copy + Sync> Sync for HugeBuf<T> {}

impl<T: Copy> HugeBuf<T> {
    /// Room for `len` elements, not initialised (nor touched).
    pub(super) fn uninit(len: usize) -> HugeBuf<std::mem::MaybeUninit<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .expect("weight buffer size overflows");
        // 64 B: a cache line, enough for any SIMD load and for T.
        let align = 64usize.max(std::mem::align_of::<T>());
        let (block, offset) = if bytes > BLOCK / 2 {
            (Arc::new(Block::new(bytes)), 0)
        } else {
            let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
            let fits = cur.as_ref().and_then(|(weak, next)| {
                let block = weak.upgrade()?;
                let offset = next.next_multiple_of(align);
                (offset + bytes <= block.len).then_some((block, offset))
            });
            let (block, offset) = fits.unwrap_or_else(|| (Arc::new(Block::new(BLOCK)), 0));
            *cur = Some((Arc::downgrade(&block), offset + bytes));
            (block, offset)
        };
        let raw = block.base.wrapping_add(offset) as *mut std::mem::MaybeUninit<T>;
        HugeBuf {
            ptr: std::ptr::NonNull::new(raw).expect("a mapped block is never at address 0"),
            _block: block,
            len,
        }
    }
}

impl<T: Copy> HugeBuf<std::mem::MaybeUninit<T>> {
    /// The elements, for writing once before [`HugeBuf::assume_init`].
    pub(super) fn uninit_mut(&mut self) -> &mut [std::mem::MaybeUninit<T>] {
        // SAFETY: ptr holds len elements of this buffer alone (MaybeUninit
        // needs no initialisation).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// # Safety
    /// Every element must have been written.
    pub(super) unsafe fn assume_init(self) -> HugeBuf<T> {
        HugeBuf {
            ptr: self.ptr.cast(),
            len: self.len,
            _block: self._block,
        }
    }
}

impl<T: Copy> std::ops::Deref for HugeBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: ptr holds len initialised elements (see `assume_init`),
        // kept mapped by `_block`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(len: usize, v: u32) -> HugeBuf<u32> {
        let mut b = HugeBuf::<u32>::uninit(len);
        for e in b.uninit_mut() {
            e.write(v);
        }
        // SAFETY: every element was written above.
        unsafe { b.assume_init() }
    }

    #[test]
    fn buffers_are_aligned_disjoint_and_keep_their_contents() {
        let bufs: Vec<HugeBuf<u32>> = (0..40).map(|i| filled(1000 + 977 * i, i as u32)).collect();
        let big = filled(BLOCK / 4 + 1, 7);
        for (i, b) in bufs.iter().enumerate() {
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert!(
                b.iter().all(|&v| v == i as u32),
                "buffer {i} was overwritten"
            );
        }
        assert_eq!(big.as_ptr() as usize % HUGE_PAGE, 0);
        assert!(big.iter().all(|&v| v == 7));
        let empty = filled(0, 1);
        assert!(empty.is_empty());
    }

    #[test]
    fn a_large_buffer_has_a_block_of_its_own_unmapped_with_it() {
        let big = filled(BLOCK / 2, 3);
        assert_eq!(Arc::strong_count(&big._block), 1);
        let block = Arc::downgrade(&big._block);
        drop(big);
        assert!(block.upgrade().is_none());
    }
}
