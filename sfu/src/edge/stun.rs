//! Just enough STUN to route a packet from an unknown address: the local ufrag of a
//! binding request's USERNAME (RFC 8445: "<receiver ufrag>:<sender ufrag>").

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;

/// The server-side ufrag named by a STUN binding request, or `None` for anything else.
/// Never panics on short or hostile input.
pub fn binding_request_local_ufrag(datagram: &[u8]) -> Option<&str> {
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
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// A binding request with this USERNAME, for tests.
#[cfg(test)]
pub(crate) fn binding_request(username: &[u8]) -> Vec<u8> {
    let mut attr = vec![0x00, 0x06];
    attr.extend((username.len() as u16).to_be_bytes());
    attr.extend(username);
    while attr.len() % 4 != 0 {
        attr.push(0);
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
}
