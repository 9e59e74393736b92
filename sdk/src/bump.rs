//! The plugin's allocator on `wasm32`: a bump allocator.
//!
//! An instance lives for one evaluation and is then thrown away whole, so memory never
//! needs to be handed back: allocating is moving a pointer, and freeing does nothing except
//! for the most recent block, which is given back so that short-lived temporaries (a
//! formatted message, a growing output buffer) reuse their space. The heap starts at the
//! linker's `__heap_base`, right after the data, and grows the linear memory with
//! `memory.grow` when it runs out. When the host refuses the growth (its memory cap), the
//! allocation returns null and Rust's allocation-failure path traps, which the host reports
//! as the memory limit.
//!
//! Compared with the standard library's dlmalloc this is smaller (about 7 KB less wasm) and
//! faster (no free lists to search or maintain), and it touches fewer pages: everything is
//! packed from the bottom of the heap up.
//!
//! A crate that sets its own `#[global_allocator]` cannot also link this SDK on `wasm32`.

use std::alloc::{GlobalAlloc, Layout};
use std::arch::wasm32;
use std::cell::Cell;
use std::ptr;

/// A wasm page: the unit of `memory.grow`.
const PAGE: usize = 65_536;

/// The heap: `next` is the first free byte, `end` the end of the linear memory.
pub(crate) struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: wasm32 without the `atomics` target feature runs one thread, so the cells are never
// touched concurrently (the module only compiles this file in that configuration).
unsafe impl Sync for Bump {}

unsafe extern "C" {
    /// The first byte after the stack and the data, placed by the linker.
    static __heap_base: u8;
}

impl Bump {
    pub(crate) const fn new() -> Bump {
        Bump {
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    /// Room for `size` bytes aligned to `align` (a power of two), or null when the memory
    /// cannot grow that far.
    fn bump(&self, size: usize, align: usize) -> *mut u8 {
        if self.end.get() == 0 {
            // First allocation of the instance: the heap starts after the data and may use
            // what is left of the initial memory before growing it.
            self.next.set(ptr::addr_of!(__heap_base) as usize);
            self.end.set(wasm32::memory_size(0) * PAGE);
        }
        let Some(start) = self.next.get().checked_next_multiple_of(align) else {
            return ptr::null_mut();
        };
        let Some(end) = start.checked_add(size) else {
            return ptr::null_mut();
        };
        if end > self.end.get() && !self.grow(end) {
            return ptr::null_mut();
        }
        self.next.set(end);
        start as *mut u8
    }

    /// Grows the memory so that it reaches `needed`; false when the host refuses.
    #[cold]
    fn grow(&self, needed: usize) -> bool {
        let pages = (needed - self.end.get()).div_ceil(PAGE);
        let previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return false;
        }
        // Nothing else grows the memory, so the new pages start where the heap ended.
        self.end.set((previous + pages) * PAGE);
        true
    }
}

// SAFETY: every block is fresh memory that no other live block overlaps: `next` only moves
// back over the most recent block when that block is freed or resized.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.bump(layout.size(), layout.align())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the most recent block can be given back; the rest goes with the instance.
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        if start + layout.size() == self.next.get() {
            // The most recent block (a growing Vec or String, typically): resize in place.
            let Some(end) = start.checked_add(new_size) else {
                return ptr::null_mut();
            };
            if end > self.end.get() && !self.grow(end) {
                return ptr::null_mut();
            }
            self.next.set(end);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        let moved = self.bump(new_size, layout.align());
        if !moved.is_null() {
            // SAFETY: the old block has `layout.size()` readable bytes, the new one at least
            // as many, and a fresh block never overlaps a live one.
            unsafe { ptr::copy_nonoverlapping(ptr, moved, layout.size()) };
        }
        moved
    }
}
