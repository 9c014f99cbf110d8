//! Random bytes for std's `HashMap` seeds and the `getrandom` family
//! (see [`crate::random`] for the source).

use super::{exported, ret, user};
use crate::random;

exported! {
    fn sys_read_entropy(buf: *mut u8, len: usize, _flags: u32) -> isize {
        ret(user::slice_mut(buf, len).map(|buf| {
            random::fill(buf);
            buf.len()
        }))
    }
}
