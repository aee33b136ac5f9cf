//! Lists as packed bytes: the postcard encodings of the items, back to back, sent as one byte
//! string. A list decodes without copies and without a fixed item capacity: the receiver checks
//! every item once and iterates over the bytes.

use core::fmt;
use core::marker::PhantomData;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Error, EventTypeRef, TypeList};

/// A validated borrowed list of `T`.
pub struct PackedList<'a, T> {
    bytes: &'a [u8],
    len: usize,
    item: PhantomData<fn() -> T>,
}

impl<T> Clone for PackedList<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for PackedList<'_, T> {}

impl<'a, T: Deserialize<'a>> PackedList<'a, T> {
    pub const EMPTY: PackedList<'static, T> = PackedList { bytes: &[], len: 0, item: PhantomData };

    /// Checks that `bytes` are whole items of `T`, back to back.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut rest = bytes;
        let mut len = 0;
        while !rest.is_empty() {
            let (_, tail) = postcard::take_from_bytes::<T>(rest).map_err(|_| Error::Malformed)?;
            if tail.len() == rest.len() {
                return Err(Error::Malformed); // an item of no bytes would never end the list
            }
            rest = tail;
            len += 1;
        }
        Ok(PackedList { bytes, len, item: PhantomData })
    }

    pub fn iter(&self) -> ListIter<'a, T> {
        ListIter { rest: self.bytes, item: PhantomData }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl<'a, T: Deserialize<'a>> IntoIterator for PackedList<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> ListIter<'a, T> {
        self.iter()
    }
}

impl<T> PartialEq for PackedList<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl<T> Eq for PackedList<'_, T> {}

impl<'a, T: Deserialize<'a> + fmt::Debug> fmt::Debug for PackedList<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(feature = "defmt")]
impl<'a, T: Deserialize<'a>> defmt::Format for PackedList<'a, T> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "[{=usize} items]", self.len)
    }
}

/// Items of a [`PackedList`].
#[derive(Debug)]
pub struct ListIter<'a, T> {
    rest: &'a [u8],
    item: PhantomData<fn() -> T>,
}

impl<'a, T: Deserialize<'a>> Iterator for ListIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.rest.is_empty() {
            return None;
        }
        let (item, rest) = postcard::take_from_bytes::<T>(self.rest).ok()?;
        self.rest = rest;
        Some(item)
    }
}

impl<T> Serialize for PackedList<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.bytes)
    }
}

impl<'de: 'a, 'a, T: Deserialize<'a>> Deserialize<'de> for PackedList<'a, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = <&'de [u8]>::deserialize(deserializer)?;
        PackedList::from_bytes(bytes).map_err(serde::de::Error::custom)
    }
}

/// Builds a packed list in a caller's buffer.
#[derive(Debug)]
pub struct ListBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
    items: usize,
}

impl<'b> ListBuilder<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        ListBuilder { buf, len: 0, items: 0 }
    }

    /// Appends one item; on [`Error::Capacity`] the list is unchanged.
    pub fn push<T: Serialize>(&mut self, item: &T) -> Result<(), Error> {
        let free = self.buf.get_mut(self.len..).ok_or(Error::Capacity)?;
        let used = postcard::to_slice(item, free).map_err(|_| Error::Capacity)?.len();
        self.len += used;
        self.items += 1;
        Ok(())
    }

    pub fn items(&self) -> usize {
        self.items
    }

    pub fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// The list built so far.
    pub fn finish<'a, T: Deserialize<'a>>(&'a self) -> PackedList<'a, T> {
        PackedList { bytes: self.bytes(), len: self.items, item: PhantomData }
    }
}

/// An owned list of event types (or patterns) in `N` bytes, e.g. a client's subscriptions.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TypeListBuf<const N: usize> {
    bytes: heapless::Vec<u8, N>,
    len: usize,
}

impl<const N: usize> fmt::Debug for TypeListBuf<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.list(), f)
    }
}

impl<const N: usize> TypeListBuf<N> {
    pub const fn new() -> Self {
        TypeListBuf { bytes: heapless::Vec::new(), len: 0 }
    }

    pub fn list(&self) -> TypeList<'_> {
        PackedList { bytes: &self.bytes, len: self.len, item: PhantomData }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.len = 0;
    }

    pub fn contains(&self, ty: EventTypeRef<'_>) -> bool {
        self.list().iter().any(|t| t == ty)
    }

    /// Appends `ty`; on [`Error::Capacity`] the list is unchanged.
    pub fn push(&mut self, ty: EventTypeRef<'_>) -> Result<(), Error> {
        let before = self.bytes.len();
        let size = postcard::experimental::serialized_size(&ty).map_err(|_| Error::Malformed)?;
        self.bytes.resize(before + size, 0).map_err(|_| Error::Capacity)?;
        let written = self.bytes.get_mut(before..).map(|free| postcard::to_slice(&ty, free).is_ok());
        if written != Some(true) {
            self.bytes.truncate(before);
            return Err(Error::Capacity);
        }
        self.len += 1;
        Ok(())
    }

    /// Removes every entry equal to `ty`; returns how many went.
    pub fn remove(&mut self, ty: EventTypeRef<'_>) -> usize {
        let mut at = 0;
        let mut removed = 0;
        loop {
            let rest = self.bytes.get(at..).unwrap_or(&[]);
            let Ok((item, tail)) = postcard::take_from_bytes::<EventTypeRef<'_>>(rest) else { break };
            let item_len = rest.len() - tail.len();
            if item == ty {
                let end = self.bytes.len();
                self.bytes.copy_within(at + item_len..end, at);
                self.bytes.truncate(end - item_len);
                self.len -= 1;
                removed += 1;
            } else {
                at += item_len;
            }
        }
        removed
    }
}
