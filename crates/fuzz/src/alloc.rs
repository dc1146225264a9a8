//! Counts the bytes each thread holds, so the fuzzer can bound the memory
//! one input costs. Takes effect only in a binary that installs it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: mailrobot_fuzz::alloc::Counting = mailrobot_fuzz::alloc::Counting;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting per thread (bytes freed by another
/// thread than the one that allocated them skew both; the targets run on
/// one thread).
pub struct Counting;

fn add(bytes: isize) {
    // try_with: allocations during thread teardown are simply not counted.
    let _ = HELD.try_with(|held| {
        let now = held.get() + bytes;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts a measurement on this thread: the peak becomes what is held now.
pub fn reset_peak() -> isize {
    let held = HELD.with(Cell::get);
    PEAK.with(|peak| peak.set(held));
    held
}

/// The most this thread held since [`reset_peak`].
pub fn peak() -> isize {
    PEAK.with(Cell::get)
}
