//! A CRC-32 over every byte of a file, stored inside the file itself.
//!
//! The writer puts a placeholder (`crc32:00000000`) where the checksum
//! goes, computes the CRC of the whole file with the placeholder in it, and
//! writes the digits over the placeholder. The reader finds the one entry,
//! computes the CRC of the file with the digits read as zeros again, and
//! compares. So a change to any byte (header, padding, data, or the
//! checksum itself) is caught, and the file stays in its standard format
//! (safetensors, JSON) for other tools.

use crate::error::{bail, Error, Result};

/// The value a checksum entry holds while the checksum is computed.
pub(crate) const PLACEHOLDER: &str = "crc32:00000000";
const DIGITS: usize = 8;
const ZEROS: [u8; DIGITS] = [b'0'; DIGITS];

/// Where the digits of the entry that follows `anchor` start in
/// `bytes[region]`: the anchor must occur exactly once there, followed by
/// `crc32:` and eight hex digits and a closing quote.
fn digits_at(bytes: &[u8], region: std::ops::Range<usize>, anchor: &[u8]) -> Result<usize> {
    let prefix = PLACEHOLDER.len() - DIGITS;
    let within = &bytes[region.clone()];
    let mut found = within.windows(anchor.len()).enumerate().filter(|(_, w)| *w == anchor).map(|(i, _)| i);
    let (Some(at), None) = (found.next(), found.next()) else {
        bail!(format, "damaged file: it has no single checksum entry (written by an older version?)");
    };
    let start = region.start + at + anchor.len();
    let entry = bytes.get(start..start + prefix + DIGITS + 1);
    match entry {
        Some(e) if e.starts_with(&PLACEHOLDER.as_bytes()[..prefix]) && e[prefix + DIGITS] == b'"' => Ok(start + prefix),
        _ => bail!(format, "damaged file: malformed checksum entry"),
    }
}

fn crc_with_zeros(bytes: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..at]);
    h.update(&ZEROS);
    h.update(&bytes[at + DIGITS..]);
    h.finalize()
}

/// Write the checksum of `bytes` over the placeholder that follows `anchor` in `bytes[region]`.
pub(crate) fn seal(bytes: &mut [u8], region: std::ops::Range<usize>, anchor: &[u8]) -> Result<()> {
    let at = digits_at(bytes, region, anchor)?;
    if bytes[at..at + DIGITS] != ZEROS {
        return Err(Error::invalid("internal: the checksum entry does not hold the placeholder"));
    }
    let crc = crc_with_zeros(bytes, at);
    bytes[at..at + DIGITS].copy_from_slice(format!("{crc:08x}").as_bytes());
    Ok(())
}

/// Check the checksum that follows `anchor` in `bytes[region]` against every byte of `bytes`.
pub(crate) fn verify(bytes: &[u8], region: std::ops::Range<usize>, anchor: &[u8]) -> Result<()> {
    let at = digits_at(bytes, region, anchor)?;
    let stored = std::str::from_utf8(&bytes[at..at + DIGITS])
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .and_then(|s| u32::from_str_radix(s, 16).ok());
    let Some(stored) = stored else { bail!(format, "damaged file: malformed checksum entry") };
    let actual = crc_with_zeros(bytes, at);
    if stored != actual {
        bail!(format, "damaged file: checksum mismatch (stored {stored:08x}, computed {actual:08x})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: &[u8] = b"\"checksum\":\"";

    fn sealed() -> Vec<u8> {
        let mut b = format!("{{\"a\":1,\"checksum\":\"{PLACEHOLDER}\",\"z\":[1,2,3]}}").into_bytes();
        let n = b.len();
        seal(&mut b, 0..n, ANCHOR).unwrap();
        b
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let b = sealed();
        verify(&b, 0..b.len(), ANCHOR).unwrap();
        for pos in 0..b.len() {
            for bit in 0..8 {
                let mut m = b.clone();
                m[pos] ^= 1 << bit;
                assert!(verify(&m, 0..m.len(), ANCHOR).is_err(), "bit {bit} of byte {pos}");
            }
        }
    }

    #[test]
    fn a_missing_or_repeated_entry_is_an_error() {
        let mut b = sealed();
        b.extend_from_slice(b"\"checksum\":\"crc32:00000000\"");
        assert!(verify(&b, 0..b.len(), ANCHOR).is_err());
        assert!(verify(b"{}", 0..2, ANCHOR).is_err());
        // Cut inside the entry.
        let b = sealed();
        let cut = b.windows(6).position(|w| w == b"crc32:").unwrap() + 9;
        assert!(verify(&b[..cut], 0..cut, ANCHOR).is_err());
    }
}
