//! TURN relay credentials for clients whose network blocks UDP to the media server.
//!
//! Zvon does not relay media itself: a TURN server (coturn, `use-auth-secret`) does, and
//! the `joined` message hands each participant short-lived credentials in the TURN REST API
//! scheme coturn checks: username `<expiry unix seconds>:<identity>`, password
//! `base64(HMAC-SHA1(secret, username))`. The secret is shared only with the TURN server.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

/// Where clients find TURN servers and how their credentials are made.
#[derive(Clone)]
pub struct TurnConfig {
    /// `turn:HOST:PORT?transport=udp|tcp` or `turns:HOST:PORT?transport=tcp`, in the order
    /// clients should prefer them.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`.
    pub secret: String,
    /// How long a credential stays valid. It only has to outlive the allocation's start:
    /// coturn keeps a running allocation past the expiry, but reconnects need a fresh join.
    pub ttl: Duration,
}

/// The secret must never reach a log, even through `{:?}` of the server settings.
impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// One entry of `RTCConfiguration.iceServers`, as the browser takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TurnConfigError {
    #[error("TURN URL {0:?} must start with turn: or turns:")]
    BadUrl(String),
    #[error("TURN URLs need a TURN secret (--turn-secret, coturn's static-auth-secret)")]
    NoSecret,
    #[error("a TURN secret without TURN URLs does nothing (give --turn-url)")]
    NoUrls,
    #[error("the TURN credential lifetime must be at least one minute")]
    TtlTooShort,
}

/// Six hours: a long meeting's reconnects keep working, a leaked credential dies the same day.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 3600);

impl TurnConfig {
    /// `None` when neither URLs nor a secret are given: clients get no relay.
    pub fn new(
        urls: Vec<String>,
        secret: Option<String>,
        ttl: Duration,
    ) -> Result<Option<Self>, TurnConfigError> {
        let secret = secret.filter(|s| !s.is_empty());
        match (urls.is_empty(), secret) {
            (true, None) => Ok(None),
            (true, Some(_)) => Err(TurnConfigError::NoUrls),
            (false, None) => Err(TurnConfigError::NoSecret),
            (false, Some(secret)) => {
                if let Some(bad) = urls
                    .iter()
                    .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
                {
                    return Err(TurnConfigError::BadUrl(bad.clone()));
                }
                if ttl < Duration::from_secs(60) {
                    return Err(TurnConfigError::TtlTooShort);
                }
                Ok(Some(TurnConfig { urls, secret, ttl }))
            }
        }
    }

    /// The ICE servers for `identity`, valid until `now_unix + ttl`.
    pub fn ice_servers(&self, identity: &str, now_unix: u64) -> Vec<IceServer> {
        let username = format!("{}:{identity}", now_unix + self.ttl.as_secs());
        let credential = credential(&self.secret, &username);
        vec![IceServer {
            urls: self.urls.clone(),
            username,
            credential,
        }]
    }
}

/// `base64(HMAC-SHA1(secret, username))`: the password coturn derives for `username`.
pub fn credential(secret: &str, username: &str) -> String {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?") =
    /// effcdf6ae5eb2fa2d27416d5f184df9c259a7c79, whose base64 is below.
    #[test]
    fn credential_matches_rfc2202_vector() {
        assert_eq!(
            credential("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    /// A TURN REST username, checked against
    /// `printf %s 1700021600:alice | openssl dgst -sha1 -hmac north-sea-turn -binary | base64`.
    #[test]
    fn credential_matches_openssl_for_a_turn_username() {
        assert_eq!(
            credential("north-sea-turn", "1700021600:alice"),
            "aT3gbam89nrg1o6fh1PUUgTf9rk="
        );
    }

    #[test]
    fn ice_servers_carry_expiry_and_identity() {
        let turn = TurnConfig::new(
            vec![
                "turn:turn.example.org:3478?transport=udp".into(),
                "turns:turn.example.org:443?transport=tcp".into(),
            ],
            Some("north-sea-turn".into()),
            Duration::from_secs(6 * 3600),
        )
        .unwrap()
        .unwrap();
        let servers = turn.ice_servers("alice", 1_700_000_000);
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].urls, turn.urls);
        assert_eq!(servers[0].username, "1700021600:alice");
        assert_eq!(
            servers[0].credential,
            credential("north-sea-turn", "1700021600:alice")
        );
        let json = serde_json::to_value(&servers[0]).unwrap();
        assert_eq!(json["username"], "1700021600:alice");
    }

    #[test]
    fn settings_are_checked() {
        let url = || vec!["turn:h:3478".to_string()];
        let ttl = DEFAULT_TTL;
        assert!(TurnConfig::new(vec![], None, ttl).unwrap().is_none());
        assert_eq!(
            TurnConfig::new(url(), None, ttl).unwrap_err(),
            TurnConfigError::NoSecret
        );
        assert_eq!(
            TurnConfig::new(vec![], Some("s".into()), ttl).unwrap_err(),
            TurnConfigError::NoUrls
        );
        assert_eq!(
            TurnConfig::new(vec!["stun:h:3478".into()], Some("s".into()), ttl).unwrap_err(),
            TurnConfigError::BadUrl("stun:h:3478".into())
        );
        assert_eq!(
            TurnConfig::new(url(), Some("s".into()), Duration::from_secs(5)).unwrap_err(),
            TurnConfigError::TtlTooShort
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let turn = TurnConfig::new(
            vec!["turn:h:3478".into()],
            Some("do-not-print".into()),
            DEFAULT_TTL,
        )
        .unwrap()
        .unwrap();
        assert!(!format!("{turn:?}").contains("do-not-print"));
    }
}
