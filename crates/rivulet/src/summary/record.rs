//! TFRecord framing: each record is its length (u64, little-endian), the
//! masked CRC-32C of those 8 bytes, the data, and the masked CRC-32C of
//! the data (both CRCs little-endian u32).

use super::proto::Event;
use crate::error::{bail, Error, Result};
use prost::Message;
use std::path::Path;

/// The constant TFRecord adds to a rotated CRC.
const MASK_DELTA: u32 = 0xa282_ead8;

/// The masked CRC-32C of `data`, as TFRecord stores it: the CRC rotated
/// right by 15 bits plus `0xa282ead8` (wrapping). Masking keeps a CRC of
/// data that itself holds CRCs from being weak.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// `data` framed as one TFRecord.
pub fn tfrecord(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The records of a TFRecord file's bytes, each with its byte offset.
/// Both CRCs of every record are checked; a damaged or cut-off record is
/// an error naming its offset. Lengths are checked against the bytes
/// present before anything is sliced, so a forged length allocates nothing.
pub fn split_records(bytes: &[u8]) -> Result<Vec<(usize, &[u8])>> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let (Some(len_bytes), Some(len_crc)) = (rest.get(..8), rest.get(8..12)) else {
            bail!(
                format,
                "truncated record at offset {offset}: its 12-byte header is cut off after {} bytes",
                rest.len()
            );
        };
        let stored = u32::from_le_bytes([len_crc[0], len_crc[1], len_crc[2], len_crc[3]]);
        let computed = masked_crc32c(len_bytes);
        if stored != computed {
            bail!(
                format,
                "corrupt record at offset {offset}: the length's CRC is {stored:#010x}, its bytes give {computed:#010x}"
            );
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(len_bytes);
        let len = u64::from_le_bytes(len);
        let available = (rest.len() - 12) as u64;
        if available < 4 || len > available - 4 {
            bail!(
                format,
                "truncated record at offset {offset}: it announces {len} bytes of data and a 4-byte CRC, {available} bytes remain"
            );
        }
        // len <= available - 4 < rest.len(), so it fits in usize.
        let len = len as usize;
        let data = &rest[12..12 + len];
        let crc = &rest[12 + len..16 + len];
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = masked_crc32c(data);
        if stored != computed {
            bail!(
                format,
                "corrupt record at offset {offset}: the data's CRC is {stored:#010x}, its {len} bytes give {computed:#010x}"
            );
        }
        out.push((offset, data));
        offset += 16 + len;
    }
    Ok(out)
}

/// Every event of the event file at `path`, in order. A file that is
/// truncated, fails a CRC or holds a record that is not an `Event` is an
/// error (never a panic) naming the file and the record's byte offset.
pub fn read_events(path: impl AsRef<Path>) -> Result<Vec<Event>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::from(e).with_path(path))?;
    let records = split_records(&bytes).map_err(|e| e.with_path(path))?;
    let mut events = Vec::with_capacity(records.len());
    for (offset, data) in records {
        let event = Event::decode(data).map_err(|e| {
            Error::format(format!("record at offset {offset} is not a tensorflow.Event: {e}")).with_path(path)
        })?;
        events.push(event);
    }
    Ok(events)
}
