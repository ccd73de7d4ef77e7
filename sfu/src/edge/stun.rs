//! Just enough STUN to route a packet from an unknown address (the local ufrag of a binding
//! request's USERNAME, RFC 8445: "<receiver ufrag>:<sender ufrag>") and to see which checks
//! nominate (USE-CANDIDATE, which a browser puts on the checks of the pair it uses).

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_USE_CANDIDATE: u16 = 0x0025;

/// The attribute `wanted` of a STUN binding request: `Some(value)` when present, `None` when
/// absent or when the datagram is not a well-formed binding request. Never panics on short
/// or hostile input.
fn binding_request_attribute(datagram: &[u8], wanted: u16) -> Option<&[u8]> {
    if datagram.len() < 20 || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let msg_type = u16::from_be_bytes([datagram[0], datagram[1]]);
    if msg_type != BINDING_REQUEST {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let body = datagram.get(20..20 + body_len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + len)?;
        if kind == wanted {
            return Some(value);
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// The server-side ufrag named by a STUN binding request, or `None` for anything else.
pub fn binding_request_local_ufrag(datagram: &[u8]) -> Option<&str> {
    let username = binding_request_attribute(datagram, ATTR_USERNAME)?;
    std::str::from_utf8(username).ok()?.split(':').next()
}

/// A binding request carrying USE-CANDIDATE: the controlling agent nominates the pair it
/// arrives on. Unauthenticated here; str0m checks the integrity.
pub fn is_nominating_binding_request(datagram: &[u8]) -> bool {
    binding_request_attribute(datagram, ATTR_USE_CANDIDATE).is_some()
}

/// A binding request with this USERNAME, for tests.
#[cfg(test)]
pub(crate) fn binding_request(username: &[u8]) -> Vec<u8> {
    binding_request_with(username, false)
}

/// A binding request with this USERNAME, and USE-CANDIDATE if `nominate`, for tests.
#[cfg(test)]
pub(crate) fn binding_request_with(username: &[u8], nominate: bool) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend((username.len() as u16).to_be_bytes());
    attr.extend(username);
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    if nominate {
        attr.extend([0x00, 0x25, 0x00, 0x00]);
    }
    let mut m = vec![0x00, 0x01];
    m.extend((attr.len() as u16).to_be_bytes());
    m.extend(MAGIC_COOKIE);
    m.extend([7u8; 12]);
    m.extend(attr);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_local_ufrag() {
        assert_eq!(
            binding_request_local_ufrag(&binding_request(b"srvA:cliB")),
            Some("srvA")
        );
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        let good = binding_request(b"srvA:cliB");
        for cut in 0..good.len() {
            assert_eq!(
                binding_request_local_ufrag(&good[..cut]),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(binding_request_local_ufrag(&[0xff; 64]), None);
        let mut bad_len = good.clone();
        bad_len[22] = 0xff; // attribute length beyond the message
        assert_eq!(binding_request_local_ufrag(&bad_len), None);
    }

    #[test]
    fn sees_use_candidate() {
        let nominating = binding_request_with(b"srvA:cliB", true);
        assert!(is_nominating_binding_request(&nominating));
        assert_eq!(binding_request_local_ufrag(&nominating), Some("srvA"));
        assert!(!is_nominating_binding_request(&binding_request(
            b"srvA:cliB"
        )));
        for cut in 0..nominating.len() {
            assert!(
                !is_nominating_binding_request(&nominating[..cut]),
                "cut at {cut}"
            );
        }
        // A binding response with the attribute is not a request.
        let mut response = nominating.clone();
        response[1] = 0x01;
        response[0] = 0x01;
        assert!(!is_nominating_binding_request(&response));
    }
}
