//! Access tokens: HS256 JWTs naming a room, an identity and what it may do there.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};

use crate::config::ApiKey;

/// What a participant may do. Defaults are those of an ordinary participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grants {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub room_admin: bool,
    pub hidden: bool,
    /// May call the server API (`/api/calls`): for app backends, not for users.
    pub server_api: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            room_admin: false,
            hidden: false,
            server_api: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key whose secret signed this token.
    pub iss: String,
    /// Identity of the user.
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The only room this token may join; empty for device and server-API tokens.
    #[serde(default)]
    pub room: String,
    /// The device of `sub` this token signs in (device sockets, calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default)]
    pub grants: Grants,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token was signed by an unknown API key")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token could not be signed: {0}")]
    Signing(String),
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Claims {
    /// Claims for `identity` in `room`, valid for `ttl` from now.
    pub fn new(api_key: &str, room: &str, identity: &str, ttl: Duration) -> Self {
        let now = now_secs();
        Claims {
            iss: api_key.to_string(),
            sub: identity.to_string(),
            name: None,
            room: room.to_string(),
            device: None,
            exp: now + ttl.as_secs(),
            nbf: None,
            iat: Some(now),
            grants: Grants::default(),
        }
    }
}

/// Signs `claims` with `secret` (HS256).
pub fn mint(claims: &Claims, secret: &str) -> Result<String, TokenError> {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| TokenError::Signing(e.to_string()))
}

/// Checks signature, key and validity period; returns the claims.
pub fn verify(token: &str, keys: &[ApiKey]) -> Result<Claims, TokenError> {
    let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::HS256 {
        return Err(TokenError::Malformed);
    }
    // Read `iss` before verifying, only to pick the secret; verification follows.
    let mut peek = Validation::new(Algorithm::HS256);
    peek.insecure_disable_signature_validation();
    peek.validate_exp = false;
    peek.required_spec_claims.clear();
    let unverified = decode::<Claims>(token, &DecodingKey::from_secret(&[]), &peek)
        .map_err(|_| TokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.key == unverified.claims.iss)
        .ok_or(TokenError::UnknownKey)?;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    match decode::<Claims>(
        token,
        &DecodingKey::from_secret(key.secret.as_bytes()),
        &validation,
    ) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<ApiKey> {
        vec![ApiKey {
            key: "k1".into(),
            secret: "s1-s1-s1-s1-s1-s1-s1-s1".into(),
        }]
    }

    #[test]
    fn round_trip_keeps_claims() {
        let mut c = Claims::new("k1", "room", "alice", Duration::from_secs(60));
        c.grants.can_publish = false;
        let t = mint(&c, "s1-s1-s1-s1-s1-s1-s1-s1").unwrap();
        assert_eq!(verify(&t, &keys()).unwrap(), c);
    }

    #[test]
    fn refuses_expired_wrong_secret_and_unknown_key() {
        let mut c = Claims::new("k1", "room", "alice", Duration::from_secs(60));
        c.exp = now_secs() - 5;
        assert_eq!(
            verify(&mint(&c, "s1-s1-s1-s1-s1-s1-s1-s1").unwrap(), &keys()),
            Err(TokenError::Expired)
        );
        let c = Claims::new("k1", "room", "alice", Duration::from_secs(60));
        assert_eq!(
            verify(&mint(&c, "other").unwrap(), &keys()),
            Err(TokenError::BadSignature)
        );
        let c = Claims::new("k2", "room", "alice", Duration::from_secs(60));
        assert_eq!(
            verify(&mint(&c, "s1").unwrap(), &keys()),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(verify("not.a.jwt", &keys()), Err(TokenError::Malformed));
    }
}
