//! The wire: packets cut out of a byte stream, and the fields read out of a packet.

use super::MAX_PACKET_LEN;

/// Longest handle (the protocol says 256 bytes).
const MAX_HANDLE_LEN: usize = 256;

pub(super) mod fxp {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const RENAME: u8 = 18;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const EXTENDED: u8 = 200;
}

#[derive(Debug)]
pub(super) struct Malformed(pub(super) String);

/// Cuts a byte stream into packets, buffering at most one.
#[derive(Debug, Default)]
pub(super) struct Framer {
    pub(super) buf: Vec<u8>,
}

impl Framer {
    pub(super) fn feed(
        &mut self,
        mut bytes: &[u8],
        mut packet: impl FnMut(&[u8]) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        while !bytes.is_empty() {
            if self.buf.is_empty()
                && let Some(len) = packet_len(bytes)?
                && bytes.len() >= 4 + len
            {
                // A whole packet in the chunk: no copy.
                packet(&bytes[4..4 + len])?;
                bytes = &bytes[4 + len..];
                continue;
            }
            if self.buf.len() < 4 {
                let take = (4 - self.buf.len()).min(bytes.len());
                self.buf.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.buf.len() < 4 {
                    break;
                }
            }
            let len = packet_len(&self.buf)?.unwrap_or(0);
            let take = (4 + len - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == 4 + len {
                let result = packet(&self.buf[4..]);
                self.buf.clear();
                result?;
            }
        }
        Ok(())
    }
}

/// The length of the packet starting `bytes`, once its length field is there.
fn packet_len(bytes: &[u8]) -> Result<Option<usize>, Malformed> {
    let Some(field) = bytes.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([field[0], field[1], field[2], field[3]]) as usize;
    if len == 0 {
        return Err(Malformed("empty packet".to_string()));
    }
    if len > MAX_PACKET_LEN {
        return Err(Malformed(format!(
            "packet of {len} bytes (at most {MAX_PACKET_LEN})"
        )));
    }
    Ok(Some(len))
}

/// Reads the fields of one packet.
pub(super) struct Reader<'a> {
    pub(super) data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        if self.data.len() < n {
            return Err(Malformed(format!("truncated {what}")));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    pub(super) fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(super) fn string(&mut self, what: &str) -> Result<&'a [u8], Malformed> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    pub(super) fn text(&mut self, what: &str) -> Result<String, Malformed> {
        Ok(String::from_utf8_lossy(self.string(what)?).into_owned())
    }

    pub(super) fn handle(&mut self) -> Result<Vec<u8>, Malformed> {
        let handle = self.string("handle")?;
        if handle.len() > MAX_HANDLE_LEN {
            return Err(Malformed(format!("handle of {} bytes", handle.len())));
        }
        Ok(handle.to_vec())
    }
}
