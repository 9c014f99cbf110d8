//! Random bytes from the CPU (RDRAND), for std's `HashMap` seeds and the
//! `getrandom` family.

use eremite_interface::errno::{self, Errno};

use super::{ret, user};
use crate::arch;

fn fill(buf: &mut [u8]) -> Result<usize, Errno> {
    for chunk in buf.chunks_mut(8) {
        let value = arch::rdrand64().ok_or(errno::EIO)?;
        chunk.copy_from_slice(&value.to_ne_bytes()[..chunk.len()]);
    }
    Ok(buf.len())
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_read_entropy(buf: *mut u8, len: usize, _flags: u32) -> isize {
    ret(user::slice_mut(buf, len).and_then(fill))
}
