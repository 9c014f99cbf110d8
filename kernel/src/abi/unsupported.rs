//! hermit-abi functions that are not implemented yet. They exist so that
//! every std program links; each fails with `ENOSYS` (or the ABI's failure
//! value where the return type has no errno). The README's "what works"
//! table lists them.

use eremite_interface::errno::ENOSYS;

macro_rules! enosys {
    ($($name:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(
            #[unsafe(no_mangle)]
            pub extern "C" fn $name($(_: $arg),*) -> $ret {
                <$ret>::from(ENOSYS.negated() as i8)
            }
        )*
    };
}

enosys! {
    // Hermit's wait queues (no std or crate we know of calls them).
    sys_notify(usize, i32) -> i32;
    sys_add_queue(usize, i64) -> i32;
    sys_wait(usize) -> i32;
    sys_init_queue(usize) -> i32;
    sys_destroy_queue(usize) -> i32;
}
