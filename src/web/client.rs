//! Who is asking: the client IP (for rate limits and consent records) and user agent.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts},
};

use super::AppState;

#[derive(Debug, Clone)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = if state.live.settings().server.trust_forwarded_for {
            forwarded_client(&parts.headers)
        } else {
            None
        };
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().filter(|c| !c.is_control()).take(300).collect());
        Ok(Self {
            ip: forwarded.or(peer).map(canonical_ip),
            user_agent,
        })
    }
}

/// The client address our own proxy reported: the right-most `X-Forwarded-For` entry (the
/// one it appended), or else the right-most `for=` of `Forwarded:` (RFC 7239). Entries may
/// carry a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`) or brackets; a value that is not
/// an address (`unknown`, an obfuscated name) gives none, so the peer is used.
fn forwarded_client(headers: &axum::http::HeaderMap) -> Option<IpAddr> {
    let xff = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back();
    if let Some(entry) = xff {
        return parse_node(entry);
    }
    headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then_some(v)
            })
        })
        .next_back()
        .and_then(parse_node)
}

/// One node of a forwarding header: an IP address with or without a port, brackets or
/// (for `Forwarded:`) quotes.
fn parse_node(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"');
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = t.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    // `[v6]` without a port.
    t.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The address as one client: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is that
/// IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The key the per-IP limit counts under: an IPv4 address, or an IPv6 /64 (one household
/// or server gets a whole /64 and can rotate through it freely).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn forwarding_headers_in_every_shape_proxies_write() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        for (name, value, want) in [
            ("x-forwarded-for", "198.51.100.7", "198.51.100.7"),
            ("x-forwarded-for", "10.0.0.1, 198.51.100.7", "198.51.100.7"),
            ("x-forwarded-for", "198.51.100.7:4711", "198.51.100.7"),
            ("x-forwarded-for", "[2001:db8::1]:4711", "2001:db8::1"),
            ("x-forwarded-for", "[2001:db8::1]", "2001:db8::1"),
            ("x-forwarded-for", " 2001:db8::1 ", "2001:db8::1"),
            (
                "forwarded",
                "for=192.0.2.60;proto=http;by=203.0.113.43",
                "192.0.2.60",
            ),
            (
                "forwarded",
                "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\"",
                "2001:db8:cafe::17",
            ),
            ("forwarded", "proto=https;For=198.51.100.9", "198.51.100.9"),
        ] {
            assert_eq!(
                forwarded_client(&with(name, value)),
                ip(want),
                "{name}: {value}"
            );
        }
        assert_eq!(forwarded_client(&with("forwarded", "for=unknown")), None);
        assert_eq!(forwarded_client(&with("x-forwarded-for", "garbage")), None);
        assert_eq!(forwarded_client(&HeaderMap::new()), None);
    }

    #[test]
    fn the_limit_counts_one_ipv4_client_and_one_ipv6_slash_64() {
        let key = |s: &str| limit_key(s.parse().expect("ip")).to_string();
        assert_eq!(key("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(key("198.51.100.7"), "198.51.100.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
