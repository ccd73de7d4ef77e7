//! Opus frames from RTP (RFC 7587): one packet is one frame. Publishers that negotiated
//! RED (RFC 2198) wrap it with earlier frames as redundancy; the recording keeps the primary.

/// The Opus frame a packet carries: the payload itself, or the primary block of a RED
/// payload. `None` for an empty payload or a RED payload that does not add up.
pub fn opus_frame(payload: &[u8], red: bool) -> Option<&[u8]> {
    if !red {
        return (!payload.is_empty()).then_some(payload);
    }
    // Headers: 4 bytes (F=1: pt, ts offset, 10-bit length) per redundant block, then one
    // byte (F=0: pt) for the primary; the blocks follow in the same order.
    let mut pos = 0;
    let mut redundant = 0usize;
    loop {
        let b = *payload.get(pos)?;
        if b & 0x80 == 0 {
            pos += 1;
            break;
        }
        let hi = *payload.get(pos + 2)?;
        let lo = *payload.get(pos + 3)?;
        redundant += (usize::from(hi & 0x03) << 8) | usize::from(lo);
        pos += 4;
    }
    let primary = payload.get(pos + redundant..)?;
    (!primary.is_empty()).then_some(primary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_opus_is_the_payload() {
        assert_eq!(opus_frame(&[0x78, 1, 2], false), Some(&[0x78, 1, 2][..]));
        assert_eq!(opus_frame(&[], false), None);
    }

    #[test]
    fn red_keeps_the_primary_block() {
        // One redundant block of 3 bytes (pt 111, offset 960), then the primary (pt 111).
        let red = [0xef, 0x0f, 0x00, 0x03, 0x6f, 9, 9, 9, 0x78, 5, 6];
        assert_eq!(opus_frame(&red, true), Some(&[0x78, 5, 6][..]));
        // Only a primary.
        assert_eq!(opus_frame(&[0x6f, 0x78, 7], true), Some(&[0x78, 7][..]));
        // Lengths that point past the end.
        assert_eq!(opus_frame(&[0xef, 0x0f, 0x00, 0x09, 0x6f, 1], true), None);
        assert_eq!(opus_frame(&[0xef, 0x0f], true), None);
    }
}
