//! Size classes for small blocks: the per-CPU caches in front of the
//! kernel heap (`kernel/src/mm/cache.rs`) keep free blocks by class, and
//! the heap takes every block of a class with the class's size, so any
//! free block of a class serves any request of it.
//!
//! Classes go in 16-byte steps up to 256 bytes, then four per power of
//! two up to [`MAX_BYTES`], so a block is never more than a quarter (or
//! 16 bytes) larger than the request.

/// Largest request that has a class.
pub const MAX_BYTES: usize = 4096;
/// Largest alignment a class serves: every class size is a multiple of it.
pub const ALIGN: usize = 16;
/// Number of classes.
pub const CLASSES: usize = 32;

/// The class of a request of `size` bytes (1..=[`MAX_BYTES`]).
pub fn class_of(size: usize) -> usize {
    debug_assert!((1..=MAX_BYTES).contains(&size));
    if size <= 256 {
        return (size - 1) >> 4;
    }
    let s = size - 1;
    let power = (usize::BITS - 1 - s.leading_zeros()) as usize;
    16 + (power - 8) * 4 + ((s >> (power - 2)) & 3)
}

/// The size of the blocks of class `class` (below [`CLASSES`]).
pub fn class_size(class: usize) -> usize {
    if class < 16 {
        return (class + 1) * 16;
    }
    let power = 8 + (class - 16) / 4;
    (1 << power) + ((class - 16) % 4 + 1) * (1 << (power - 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_fits_the_smallest_class_that_holds_it() {
        for size in 1..=MAX_BYTES {
            let class = class_of(size);
            assert!(class < CLASSES, "{size}");
            let block = class_size(class);
            assert!(
                block >= size && block.is_multiple_of(ALIGN),
                "{size} -> {block}"
            );
            assert!(block <= (size * 5 / 4).max(size + 15), "{size} -> {block}");
            if class > 0 {
                assert!(class_size(class - 1) < size, "{size}");
            }
        }
        assert_eq!(class_of(MAX_BYTES), CLASSES - 1);
        assert_eq!(class_size(CLASSES - 1), MAX_BYTES);
    }
}
