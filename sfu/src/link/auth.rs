//! Cluster authentication: the shared secret, bound to the TLS session.
//!
//! Both ends export keying material from the session (RFC 5705). Each proves it knows the
//! secret with an HMAC over that material and its role, so a tag is useless on any other
//! session (a relay terminating TLS on both sides has two sessions with different material)
//! and a client tag cannot be reflected as a server tag.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{LinkError, AUTH_ERROR_CODE};

type HmacSha256 = Hmac<Sha256>;

const EKM_LABEL: &[u8] = b"EXPORTER-zvon-cluster-auth";
const CLIENT_ROLE: &[u8] = b"zvon-link client";
const SERVER_ROLE: &[u8] = b"zvon-link server";
const TAG_LEN: usize = 32;

/// How long the server waits for the client's tag, and the client for the server's answer.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(2);

fn keying_material(connection: &quinn::Connection) -> Result<[u8; 32], LinkError> {
    let mut ekm = [0u8; 32];
    connection
        .export_keying_material(&mut ekm, EKM_LABEL, b"")
        .map_err(|e| LinkError::Tls(format!("export keying material: {e:?}")))?;
    Ok(ekm)
}

fn mac(secret: &str, role: &[u8], ekm: &[u8; 32]) -> Result<HmacSha256, LinkError> {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .map_err(|e| LinkError::Auth(format!("cluster secret: {e}")))?;
    mac.update(role);
    mac.update(ekm);
    Ok(mac)
}

fn tag(secret: &str, role: &[u8], ekm: &[u8; 32]) -> Result<[u8; TAG_LEN], LinkError> {
    Ok(mac(secret, role, ekm)?.finalize().into_bytes().into())
}

/// Constant-time comparison (`verify_slice`), so timing reveals nothing of the right tag.
fn verify(secret: &str, role: &[u8], ekm: &[u8; 32], tag: &[u8]) -> Result<bool, LinkError> {
    Ok(mac(secret, role, ekm)?.verify_slice(tag).is_ok())
}

fn check_secret(secret: &str) -> Result<(), LinkError> {
    if secret.is_empty() {
        // An empty secret would make every node of every cluster trust each other.
        return Err(LinkError::Auth("the cluster secret is empty".into()));
    }
    Ok(())
}

/// The client side: sends its tag on the first bidirectional stream and checks the answer.
/// On failure the connection is closed with [`AUTH_ERROR_CODE`].
pub async fn authenticate_client(
    connection: &quinn::Connection,
    secret: &str,
) -> Result<(), LinkError> {
    let exchange = async {
        check_secret(secret)?;
        let ekm = keying_material(connection)?;
        let lost = |e: quinn::ConnectionError| LinkError::from_connection(&e);
        let (mut send, mut recv) = connection.open_bi().await.map_err(lost)?;
        send.write_all(&tag(secret, CLIENT_ROLE, &ekm)?)
            .await
            .map_err(|e| match e {
                quinn::WriteError::ConnectionLost(e) => lost(e),
                other => LinkError::Auth(format!("sending the tag: {other}")),
            })?;
        let _ = send.finish();
        let mut answer = [0u8; TAG_LEN];
        recv.read_exact(&mut answer).await.map_err(|e| match e {
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e)) => lost(e),
            other => LinkError::Auth(format!("no answer from the server: {other}")),
        })?;
        if !verify(secret, SERVER_ROLE, &ekm, &answer)? {
            return Err(LinkError::Auth(
                "the server does not know the cluster secret".into(),
            ));
        }
        Ok(())
    };
    let result = tokio::time::timeout(AUTH_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(LinkError::Auth("no answer from the server in time".into())));
    if result.is_err() {
        connection.close(AUTH_ERROR_CODE.into(), b"auth");
    }
    result
}

/// The server side: expects the client's tag on its first bidirectional stream within
/// [`AUTH_TIMEOUT`] and answers with its own. On failure the connection is closed with
/// [`AUTH_ERROR_CODE`].
pub async fn authenticate_server(
    connection: &quinn::Connection,
    secret: &str,
) -> Result<(), LinkError> {
    let exchange = async {
        check_secret(secret)?;
        let ekm = keying_material(connection)?;
        let (mut send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(|e| LinkError::from_connection(&e))?;
        let mut offered = [0u8; TAG_LEN];
        recv.read_exact(&mut offered)
            .await
            .map_err(|e| LinkError::Auth(format!("no tag from the client: {e}")))?;
        if !verify(secret, CLIENT_ROLE, &ekm, &offered)? {
            return Err(LinkError::Auth("wrong cluster secret".into()));
        }
        send.write_all(&tag(secret, SERVER_ROLE, &ekm)?)
            .await
            .map_err(|e| LinkError::Closed(e.to_string()))?;
        let _ = send.finish();
        Ok(())
    };
    let result = tokio::time::timeout(AUTH_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(LinkError::Auth("no tag from the client in time".into())));
    if result.is_err() {
        connection.close(AUTH_ERROR_CODE.into(), b"auth");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_depend_on_secret_role_and_session() {
        let ekm = [7u8; 32];
        let client = tag("s3cret", CLIENT_ROLE, &ekm).unwrap();
        assert!(verify("s3cret", CLIENT_ROLE, &ekm, &client).unwrap());
        assert!(!verify("other", CLIENT_ROLE, &ekm, &client).unwrap());
        // A client tag cannot be reflected back as the server's answer.
        assert!(!verify("s3cret", SERVER_ROLE, &ekm, &client).unwrap());
        // Nor replayed on another session.
        assert!(!verify("s3cret", CLIENT_ROLE, &[8u8; 32], &client).unwrap());
        assert!(!verify("s3cret", CLIENT_ROLE, &ekm, &client[..31]).unwrap());
    }

    #[test]
    fn empty_secret_is_refused() {
        assert!(matches!(check_secret(""), Err(LinkError::Auth(_))));
    }
}
