//! [`SockRef`]: [`Socket`]'s methods on a socket someone else owns (a
//! std or tokio stream, say), borrowed through [`AsFd`].

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};

use crate::Socket;

/// A borrowed socket: derefs to [`Socket`], never closes the descriptor.
pub struct SockRef<'s> {
    /// Never dropped: the descriptor belongs to the borrowed value.
    socket: ManuallyDrop<Socket>,
    borrow: PhantomData<&'s Socket>,
}

impl Deref for SockRef<'_> {
    type Target = Socket;

    fn deref(&self) -> &Socket {
        &self.socket
    }
}

impl<'s, S: AsFd> From<&'s S> for SockRef<'s> {
    fn from(owner: &'s S) -> SockRef<'s> {
        let fd = owner.as_fd().as_raw_fd();
        // SAFETY: `fd` is open for as long as `owner` is borrowed, which
        // `'s` ties this value to; the `Socket` is never dropped
        // (`ManuallyDrop`) and only lent out by shared reference, so it
        // never closes or gives away the descriptor it does not own.
        let socket = ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
        SockRef {
            socket,
            borrow: PhantomData,
        }
    }
}

impl fmt::Debug for SockRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SockRef").field(&*self.socket).finish()
    }
}
