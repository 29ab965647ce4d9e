//! The client's address, as rate limits judge it. Behind a reverse proxy every request comes
//! from the proxy, so the address is taken from `X-Forwarded-For` — but only when the TCP peer
//! is one of `TRUSTED_PROXIES`, and only the right-most hop no trusted proxy added: anything
//! to its left was written by the client and proves nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{Extensions, HeaderMap, request::Parts},
};
use ipnet::IpNet;

use crate::{error::AppError, state::AppState};

const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip_of(
            &parts.extensions,
            &parts.headers,
            &state.settings.trusted_proxies,
        )))
    }
}

/// [`client_ip`] of a request's connection and headers.
pub fn client_ip_of(extensions: &Extensions, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    client_ip(peer, headers, trusted)
}

/// The TCP peer, unless it is a trusted proxy: then the right-most `X-Forwarded-For` hop that
/// is not a trusted proxy. A hop that is not an address ends the walk at the last trusted
/// address seen (the proxy that wrote it vouches for no more).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => nearest = ip,
            Ok(ip) => return ip,
            Err(_) => return nearest,
        }
    }
    nearest
}

/// IPv4-mapped IPv6 peers (a dual-stack listener) compare as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_ip(ip("203.0.113.9"), &headers(&["198.51.100.1"]), &trusted);
        assert_eq!(got, ip("203.0.113.9"));
        let got = client_ip(ip("10.0.0.1"), &headers(&["198.51.100.1"]), &[]);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn a_trusted_peer_gives_the_right_most_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8", "192.0.2.7/32"]);
        // The client forged the first hop; the proxies appended the rest.
        let forwarded = headers(&["1.2.3.4, 198.51.100.20", "192.0.2.7"]);
        assert_eq!(
            client_ip(ip("10.1.2.3"), &forwarded, &trusted),
            ip("198.51.100.20")
        );
    }

    #[test]
    fn only_trusted_hops_or_garbage_stop_at_the_nearest_trusted_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers(&["10.0.0.2"]), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &headers(&["not-an-ip, 10.0.0.3"]), &trusted),
            ip("10.0.0.3")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_mapped_ipv6_peer_matches_an_ipv4_network() {
        let trusted = nets(&["127.0.0.0/8"]);
        let got = client_ip(ip("::ffff:127.0.0.1"), &headers(&["2001:db8::1"]), &trusted);
        assert_eq!(got, ip("2001:db8::1"));
    }
}
