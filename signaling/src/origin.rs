//! Which web pages may open `/rtc`.
//!
//! Browsers let any page open a WebSocket to any address (there is no CORS for WebSockets), but
//! they always say which page asked, in `Origin`. Without a check, a page on another site could
//! drive a server the visitor can reach (a dev server on `127.0.0.1` hands tokens to anyone) in
//! the visitor's name. Non-browser clients (apps, tests, the fleet's own socket piping) send no
//! `Origin` and are not affected: for them the access token is the whole check.

use std::str::FromStr;

use axum::http::{header, HeaderMap};

/// `scheme://host[:port]`, lower-cased, as browsers serialize it in `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    /// Host and port as written (`[::1]:7350`, `app.example`).
    authority: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an origin: write scheme://host[:port], e.g. https://app.example.com")]
pub struct OriginError(String);

impl FromStr for Origin {
    type Err = OriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || OriginError(s.to_string());
        let lower = s.trim().trim_end_matches('/').to_ascii_lowercase();
        let (scheme, authority) = lower.split_once("://").ok_or_else(bad)?;
        let scheme_ok = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        let authority_ok = !authority.is_empty()
            && !authority.contains(['/', '?', '#', '@', ' '])
            && authority.is_ascii();
        if !scheme_ok || !authority_ok {
            return Err(bad());
        }
        Ok(Origin {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

impl Origin {
    /// Whether this origin names the host the request was sent to (its `Host` header). Browsers
    /// leave the scheme's default port out of `Origin`; a `Host` may still carry it.
    fn is_host(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if host == self.authority {
            return true;
        }
        let default_port = match self.scheme.as_str() {
            "http" | "ws" => "80",
            "https" | "wss" => "443",
            _ => return false,
        };
        host.strip_suffix(default_port)
            .and_then(|h| h.strip_suffix(':'))
            .is_some_and(|h| h == self.authority)
    }
}

/// The origins allowed besides the server's own.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(Vec<Origin>);

/// Why an upgrade's `Origin` was refused (the reason is logged, the client gets 403).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginRefusal {
    #[error("Origin {origin:?} is neither this server ({host:?}) nor in --allowed-origins")]
    NotAllowed { origin: String, host: String },
    #[error("Origin header is not valid UTF-8")]
    Unreadable,
}

impl AllowedOrigins {
    pub fn new(origins: Vec<Origin>) -> Self {
        AllowedOrigins(origins)
    }

    /// Allows a request without `Origin`, one from the server's own origin, and listed ones.
    /// `Origin: null` (sandboxed frames, `file://` pages) names no site and is refused.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), OriginRefusal> {
        let Some(value) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let raw = value.to_str().map_err(|_| OriginRefusal::Unreadable)?;
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if let Ok(origin) = raw.parse::<Origin>() {
            if origin.is_host(host) || self.0.contains(&origin) {
                return Ok(());
            }
        }
        Err(OriginRefusal::NotAllowed {
            origin: raw.to_string(),
            host: host.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn request(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn own_origin_and_no_origin_are_allowed() {
        let none = AllowedOrigins::default();
        assert!(none.check(&request(None, "127.0.0.1:7350")).is_ok());
        assert!(none
            .check(&request(Some("http://127.0.0.1:7350"), "127.0.0.1:7350"))
            .is_ok());
        assert!(none
            .check(&request(Some("https://Zvon.Example"), "zvon.example"))
            .is_ok());
        assert!(none
            .check(&request(Some("https://zvon.example"), "zvon.example:443"))
            .is_ok());
    }

    #[test]
    fn other_origins_are_refused_unless_listed() {
        let none = AllowedOrigins::default();
        let evil = request(Some("http://evil.example"), "127.0.0.1:7350");
        assert!(matches!(
            none.check(&evil),
            Err(OriginRefusal::NotAllowed { .. })
        ));
        // Same host, other port: another origin.
        let port = request(Some("http://127.0.0.1:8080"), "127.0.0.1:7350");
        assert!(none.check(&port).is_err());
        assert!(none
            .check(&request(Some("null"), "127.0.0.1:7350"))
            .is_err());
        let listed = AllowedOrigins::new(vec!["https://app.example/".parse().expect("origin")]);
        assert!(listed
            .check(&request(Some("https://app.example"), "zvon.example"))
            .is_ok());
        assert!(listed
            .check(&request(Some("http://app.example"), "zvon.example"))
            .is_err());
    }

    #[test]
    fn settings_must_be_origins() {
        assert!("app.example".parse::<Origin>().is_err());
        assert!("https://app.example/path".parse::<Origin>().is_err());
        assert!("https://".parse::<Origin>().is_err());
        assert_eq!(
            "HTTPS://App.Example:8443"
                .parse::<Origin>()
                .expect("origin")
                .to_string(),
            "https://app.example:8443"
        );
    }
}
