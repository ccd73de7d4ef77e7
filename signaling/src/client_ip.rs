//! Which address an HTTP request comes from, when a reverse proxy (TLS termination) stands
//! between clients and the server: the per-IP upgrade limit must count clients, not the proxy.
//!
//! Forwarding headers are believed only when the TCP peer is a configured trusted proxy;
//! anybody else could write any address into them.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::{header, HeaderMap};

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`) or one address (`127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpNetError {
    #[error("{0:?} is not an IP address or CIDR network (like 10.0.0.0/8 or ::1)")]
    Syntax(String),
    #[error("prefix length /{prefix} is too long for {addr}")]
    Prefix { addr: IpAddr, prefix: u8 },
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let syntax = || IpNetError::Syntax(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().map_err(|_| syntax())?)),
            None => (s, None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| syntax())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(IpNetError::Prefix { addr, prefix });
        }
        Ok(IpNet { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`; settings name them as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// The proxies whose forwarding headers are believed. Empty (the default) trusts nobody.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client's address: the TCP peer, unless that is a trusted proxy; then the rightmost
    /// hop of `X-Forwarded-For` (or, when a request has none, of `Forwarded: for=`) that is not
    /// itself a trusted proxy. Each proxy appends the address it received the request from, so
    /// hops left of the rightmost untrusted one were written by the client and prove nothing.
    ///
    /// `X-Forwarded-For` is read first because nearly every proxy (nginx, HAProxy, Caddy,
    /// Traefik, cloud load balancers) appends to it, while most pass a client's `Forwarded`
    /// header through untouched. A hop that is not an address (`unknown`, an obfuscated
    /// `_name`) stops the walk: the trusted proxy that reported it is taken as the client.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut hops = x_forwarded_for(headers);
        if hops.is_empty() {
            hops = forwarded_for(headers);
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) => {
                    client = canonical(*ip);
                    if !self.trusts(client) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }
}

/// Every hop of every `X-Forwarded-For` line, left to right; `None` for one that is no address.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|line| line.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .map(parse_node)
        .collect()
}

/// The `for=` of every element of every `Forwarded` line (RFC 7239), left to right.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(header::FORWARDED)
        .iter()
        .flat_map(|line| line.to_str().unwrap_or("").split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim()))
            })
        })
        .collect()
}

/// A node as RFC 7239 writes it (`192.0.2.43`, `"192.0.2.43:47011"`, `"[2001:db8::17]:4711"`),
/// or as `X-Forwarded-For` sometimes does (a bare IPv6 address).
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    let (host, _port) = node.rsplit_once(':')?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().expect("net")).collect())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn networks_parse_and_match() {
        let net: IpNet = "10.1.0.0/16".parse().expect("net");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        let one: IpNet = "127.0.0.1".parse().expect("net");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: IpNet = "2001:db8::/33".parse().expect("net");
        assert!(v6.contains(ip("2001:db8:7fff::1")) && !v6.contains(ip("2001:db8:8000::1")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("proxy.example".parse::<IpNet>().is_err());
        assert!("10.0.0.0/x".parse::<IpNet>().is_err());
    }

    #[test]
    fn headers_of_an_untrusted_peer_are_ignored() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            nets(&[]).client_ip(ip("203.0.113.9"), &h),
            ip("203.0.113.9")
        );
        assert_eq!(
            nets(&["10.0.0.0/8"]).client_ip(ip("203.0.113.9"), &h),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn rightmost_untrusted_hop_of_x_forwarded_for() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client wrote the first hop itself; the proxy appended the real address.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.7"));
        let split = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(
            trusted.client_ip(ip("10.0.0.1"), &split),
            ip("198.51.100.7")
        );
        // No header: the proxy itself (a health check, say).
        assert_eq!(
            trusted.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        // Only trusted hops: the leftmost.
        let inside = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), &inside), ip("10.9.9.9"));
    }

    #[test]
    fn forwarded_for_when_there_is_no_x_forwarded_for() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[(
            "forwarded",
            "for=1.2.3.4, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.2",
        )]);
        assert_eq!(
            trusted.client_ip(ip("10.0.0.1"), &h),
            ip("2001:db8:cafe::17")
        );
        let port = headers(&[("forwarded", "proto=https;For=\"198.51.100.7:47011\"")]);
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), &port), ip("198.51.100.7"));
        let both = headers(&[
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), &both), ip("198.51.100.7"));
    }

    #[test]
    fn a_hop_that_is_no_address_stops_at_the_proxy_that_wrote_it() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[("forwarded", "for=198.51.100.7, for=unknown, for=10.0.0.2")]);
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.2"));
        let garbage = headers(&[("x-forwarded-for", "198.51.100.7, <script>")]);
        assert_eq!(trusted.client_ip(ip("10.0.0.1"), &garbage), ip("10.0.0.1"));
    }
}
