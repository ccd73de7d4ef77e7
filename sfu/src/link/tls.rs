//! TLS and QUIC transport settings of the link.
//!
//! Certificates are self-signed and throwaway: cluster membership is proven by the secret
//! bound to the session (see `auth.rs`), so the client accepts any server certificate. It
//! still verifies the handshake signature, so the server must hold the certificate's key and
//! the session keys are authenticated by it.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{LinkConfig, LinkError, ALPN};

/// The name in the server certificate and the SNI the client sends. Nobody checks it; it
/// only has to be a valid DNS name.
pub const SERVER_NAME: &str = "zvon-media";

/// Always aws-lc-rs, whatever provider the process installed as default: the link must not
/// depend on what other code in the process chose.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_error(e: impl std::fmt::Display) -> LinkError {
    LinkError::Tls(e.to_string())
}

/// Keep-alive and idle timeout, plus stream limits that match the protocol: the client opens
/// bidirectional streams (requests), the server one unidirectional stream (events).
pub(crate) fn transport(
    config: &LinkConfig,
    server: bool,
) -> Result<Arc<quinn::TransportConfig>, LinkError> {
    transport_config(config, server).map(Arc::new)
}

/// [`transport`] before it is shared, for a caller that adds settings.
pub(crate) fn transport_config(
    config: &LinkConfig,
    server: bool,
) -> Result<quinn::TransportConfig, LinkError> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(config.keep_alive));
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .map_err(|e| LinkError::Tls(format!("idle timeout: {e}")))?;
    transport.max_idle_timeout(Some(idle));
    if server {
        // Concurrent requests of one signaling node; more wait for stream credit.
        transport.max_concurrent_bidi_streams(256u32.into());
        transport.max_concurrent_uni_streams(0u32.into());
    } else {
        transport.max_concurrent_bidi_streams(0u32.into());
        transport.max_concurrent_uni_streams(1u32.into());
    }
    Ok(transport)
}

/// A server configuration with a fresh self-signed certificate for `alpns` with `transport` (a media node's link port serves the
/// signaling link and the cascade between media nodes, `crate::cascade`).
pub(crate) fn server_config_with(
    alpns: &[&[u8]],
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, LinkError> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| LinkError::Tls(format!("certificate: {e}")))?;
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(tls_error)?;
    tls.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    let quic = QuicServerConfig::try_from(tls).map_err(tls_error)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(transport);
    Ok(server)
}

/// A client configuration that accepts any server certificate (see the module docs).
pub fn client_config(config: &LinkConfig) -> Result<quinn::ClientConfig, LinkError> {
    client_config_with(ALPN, transport(config, false)?)
}

/// A client configuration for `alpn` with `transport`.
pub(crate) fn client_config_with(
    alpn: &[u8],
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, LinkError> {
    let provider = provider();
    let verifier = Arc::new(AnyServerCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(transport);
    Ok(client)
}

/// Trusts any certificate, but not any signature: the handshake must be signed by the key of
/// the certificate presented.
#[derive(Debug)]
struct AnyServerCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
