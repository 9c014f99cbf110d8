//! The socket table: a slab of slots whose ids carry a generation, so an id
//! kept after `close` cannot reach the socket that later reuses its slot.

use alloc::vec::Vec;

use eremite_interface::errno::{EBADF, ENFILE, Errno};

/// A socket's name: a slot index and that slot's generation when the socket
/// was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    index: u32,
    generation: u32,
}

impl SocketId {
    /// The id as one integer, for a file descriptor table to store.
    pub fn to_raw(self) -> u64 {
        u64::from(self.generation) << 32 | u64::from(self.index)
    }

    /// The id that [`SocketId::to_raw`] returned. Any other value names no
    /// socket (operations on it fail with `EBADF`).
    pub fn from_raw(raw: u64) -> Self {
        Self {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// At most `capacity` values, each reachable by the id `insert` returned.
pub(crate) struct Table<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
    capacity: usize,
}

impl<T> Table<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Stores `value`; `ENFILE` when the table is full.
    pub(crate) fn insert(&mut self, value: T) -> Result<SocketId, Errno> {
        if self.is_full() {
            return Err(ENFILE);
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len()).map_err(|_| ENFILE)?;
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                index
            }
        };
        let slot = self.slot_mut(index).ok_or(ENFILE)?;
        slot.value = Some(value);
        let generation = slot.generation;
        self.len += 1;
        Ok(SocketId { index, generation })
    }

    pub(crate) fn get(&self, id: SocketId) -> Result<&T, Errno> {
        self.slots
            .get(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.value.as_ref())
            .ok_or(EBADF)
    }

    pub(crate) fn get_mut(&mut self, id: SocketId) -> Result<&mut T, Errno> {
        self.slot_mut(id.index)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.value.as_mut())
            .ok_or(EBADF)
    }

    /// Takes the value out; its id (and every copy of it) goes stale.
    pub(crate) fn remove(&mut self, id: SocketId) -> Result<T, Errno> {
        let slot = self
            .slot_mut(id.index)
            .filter(|slot| slot.generation == id.generation)
            .ok_or(EBADF)?;
        let value = slot.value.take().ok_or(EBADF)?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.len -= 1;
        Ok(value)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (SocketId, &T)> {
        self.slots.iter().zip(0..).filter_map(|(slot, index)| {
            let id = SocketId {
                index,
                generation: slot.generation,
            };
            Some((id, slot.value.as_ref()?))
        })
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().filter_map(|slot| slot.value.as_mut())
    }

    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot<T>> {
        self.slots.get_mut(index as usize)
    }
}
