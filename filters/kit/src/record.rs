//! The fixed-size records kept in shared data: little-endian fields behind a version byte.
//!
//! A record is written whole and read whole. [`Writer`] appends fields; [`Reader`] takes them
//! back in the same order and refuses a record of another version or length, so a value left
//! by another build of the module (or garbage) reads as "no record" instead of nonsense.
//!
//! ```
//! use mesh_kit::record::{Reader, Writer};
//! let mut w = Writer::new(1, 14);
//! w.u8(2);
//! w.u32(7);
//! w.u64(9);
//! let bytes = w.finish();
//! let mut r = Reader::new(&bytes, 1, 14).unwrap();
//! assert_eq!((r.u8(), r.u32(), r.u64()), (Some(2), Some(7), Some(9)));
//! assert!(Reader::new(&bytes, 2, 14).is_none(), "another version");
//! ```

/// Appends the fields of one record.
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// A record of `len` bytes in all, the version byte included.
    pub fn new(version: u8, len: usize) -> Writer {
        let mut out = Vec::with_capacity(len);
        out.push(version);
        Writer { out }
    }
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Takes the fields of one record back, in the order they were written.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// `None` unless `bytes` is exactly `len` bytes long and starts with `version`.
    pub fn new(bytes: &'a [u8], version: u8, len: usize) -> Option<Reader<'a>> {
        (bytes.len() == len && bytes.first() == Some(&version)).then_some(Reader { bytes, at: 1 })
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let out = self.bytes.get(self.at..self.at.checked_add(N)?)?;
        self.at += N;
        out.try_into().ok()
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_record_reads_back_and_a_short_one_is_refused() {
        let mut w = Writer::new(3, 1 + 4 + 8);
        w.u32(u32::MAX);
        w.u64(1 << 40);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes, 3, 13).unwrap();
        assert_eq!(r.u32(), Some(u32::MAX));
        assert_eq!(r.u64(), Some(1 << 40));
        assert_eq!(r.u8(), None, "past the end");
        assert!(Reader::new(&bytes[..12], 3, 13).is_none());
        assert!(Reader::new(&[], 3, 0).is_none());
    }
}
