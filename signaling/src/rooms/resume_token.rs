//! Resume tokens that any signaling node of a fleet can check.
//!
//! A token names the participant it resumes and carries an HMAC (with the API secret every node
//! shares) over that participant, its identity and its room. The node that issued it keeps no
//! state the token depends on: when that node dies, the room's next owner can still tell that a
//! socket resuming `PA_x` is really the one that joined as `PA_x`, and take over its media.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex digits of the MAC kept: 128 bits.
const MAC_HEX: usize = 32;

fn mac(secret: &str, participant: &str, identity: &str, room: &str) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    // Lengths first: no two (participant, identity, room) triples hash the same bytes.
    for part in [participant, identity, room] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    let mut hex = hex::encode(mac.finalize().into_bytes());
    hex.truncate(MAC_HEX);
    Some(hex)
}

pub fn mint(secret: &str, participant: &str, identity: &str, room: &str) -> String {
    format!(
        "{participant}.{}",
        mac(secret, participant, identity, room).unwrap_or_default()
    )
}

/// The participant `token` resumes, if it was minted for this identity and room.
pub fn verify(secret: &str, token: &str, identity: &str, room: &str) -> Option<String> {
    let (participant, given) = token.rsplit_once('.')?;
    let expected = mac(secret, participant, identity, room)?;
    // Constant time: the comparison must not tell how much of a guessed MAC was right.
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    (same && !participant.is_empty()).then(|| participant.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-secret-of-sixteen-or-more";

    #[test]
    fn a_token_resumes_only_its_participant_identity_and_room() {
        let token = mint(SECRET, "PA_1", "ann", "class");
        assert_eq!(
            verify(SECRET, &token, "ann", "class").as_deref(),
            Some("PA_1")
        );
        assert_eq!(verify(SECRET, &token, "bob", "class"), None);
        assert_eq!(verify(SECRET, &token, "ann", "other"), None);
        assert_eq!(
            verify("another-secret-entirely", &token, "ann", "class"),
            None
        );
        let forged = token.replace("PA_1", "PA_2");
        assert_eq!(verify(SECRET, &forged, "ann", "class"), None);
        assert_eq!(verify(SECRET, "garbage", "ann", "class"), None);
        assert_eq!(verify(SECRET, "", "ann", "class"), None);
    }
}
