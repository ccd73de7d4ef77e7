//! A DTLS provider for the `publish_offer` target that builds no DTLS machinery: per input,
//! the target builds a fresh str0m `Rtc` (as a worker does per join) and accepts the offer
//! into it, and nothing in that path exchanges a DTLS record.
//!
//! Why: profiled (`perf record` on the libFuzzer binary), ~29 % of each input went into
//! the aws-lc-rs provider's `new_dtls`, which builds a dimpl configuration per instance and
//! self-tests it (an ECDH on P-256, P-384 and X25519 and an ECDSA verify) — a fixed cost
//! that no SDP reaches. Everything else stays real: SDP parsing, `accept_offer`, ICE
//! credentials, the certificate fingerprint in the answer (sha-256 of the shared
//! certificate, by the real provider) and our code after it. The instance only records
//! the role str0m gives it and never has anything to send.

use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// Installs, once per process, the feature-flag crypto provider with [`InertDtlsProvider`]
/// in place of its DTLS: an `Rtc` built without a provider of its own takes this one.
pub fn install() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        static INERT: InertDtlsProvider = InertDtlsProvider;
        CryptoProvider {
            dtls_provider: &INERT,
            ..str0m::crypto::from_feature_flags()
        }
        .install_process_default();
    });
}

#[derive(Debug)]
pub struct InertDtlsProvider;

impl DtlsProvider for InertDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        // The target shares one real certificate, as a worker does.
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        _cert: &DtlsCert,
        now: Instant,
        _version: DtlsVersion,
        _mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        Ok(Box::new(InertDtls { active: false, now }))
    }
}

#[derive(Debug)]
struct InertDtls {
    active: bool,
    now: Instant,
}

impl DtlsInstance for InertDtls {
    fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    fn handle_packet(&mut self, _packet: &[u8]) -> Result<(), DtlsImplError> {
        Ok(())
    }

    fn poll_output<'a>(&mut self, _buf: &'a mut [u8]) -> DtlsOutput<'a> {
        DtlsOutput::Timeout(self.now + Duration::from_secs(3600))
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = now;
        Ok(())
    }

    fn send_application_data(&mut self, _data: &[u8]) -> Result<usize, DtlsImplError> {
        Ok(0)
    }

    fn is_active(&self) -> bool {
        self.active
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        None
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        Ok(())
    }
}
