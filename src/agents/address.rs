//! Where erp-sync may send a request on an agent's behalf (SSRF). An `agentUrl` is chosen by
//! whoever registers the agent, so every address it leads to is judged, at registration and
//! again at every connection (a name may resolve elsewhere later: DNS rebinding):
//!
//! * never: link-local and cloud metadata (169.254.0.0/16, fe80::/10, fd00:ec2::254,
//!   100.100.100.200), unspecified, "this network" (0.0.0.0/8), multicast, broadcast, reserved;
//! * only with `AGENT_URL_ALLOW_PRIVATE`: loopback, RFC 1918, CGNAT (100.64.0.0/10), unique
//!   local (fc00::/7) and the other ranges that do not route on the internet;
//! * IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by
//!   that IPv4 address.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// How far an address may be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    /// Loopback or a private range: allowed only with `AGENT_URL_ALLOW_PRIVATE`.
    Private,
    /// Link-local, metadata, unspecified, multicast…: never.
    Forbidden,
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    let forbidden = ip.is_link_local()       // 169.254/16: cloud metadata lives here
        || ip.is_unspecified()
        || a == 0                            // "this network"
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240                          // reserved
        || ip == Ipv4Addr::new(100, 100, 100, 200); // Alibaba Cloud metadata
    let private = ip.is_loopback()
        || ip.is_private()
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)); // benchmarking
    if forbidden {
        AddressClass::Forbidden
    } else if private {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    let forbidden = ip.is_unspecified()
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || ip.is_multicast()
        || ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254); // AWS metadata (IPv6)
    let private = ip.is_loopback()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfec0 // deprecated site-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8); // documentation
    if forbidden {
        AddressClass::Forbidden
    } else if private {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

/// The IPv4 address an IPv6 address stands for, if any: `::ffff:a.b.c.d` (mapped),
/// `::a.b.c.d` (compatible, deprecated), `64:ff9b::a.b.c.d` and `64:ff9b:1::/48` (NAT64),
/// `2002:aabb:ccdd::` (6to4).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified();
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1);
    if compatible || nat64 {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Why an agent URL or address is refused. The message names the address and the rule, never
/// anything else of the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddressRefused(pub String);

/// The rules of this deployment (`AGENT_URL_ALLOW_PRIVATE`, `APP_ENV`).
#[derive(Debug, Clone, Copy)]
pub struct AddressPolicy {
    pub allow_private: bool,
    pub require_https: bool,
}

/// How long registration waits for DNS before leaving the decision to connect time.
const REGISTRATION_DNS_TIMEOUT: Duration = Duration::from_secs(2);

impl AddressPolicy {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            allow_private: settings.agent_url_allow_private,
            require_https: settings.is_production(),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), AddressRefused> {
        match classify(ip) {
            AddressClass::Public => Ok(()),
            AddressClass::Private if self.allow_private => Ok(()),
            AddressClass::Private => Err(AddressRefused(format!(
                "{ip} is a loopback or private address (AGENT_URL_ALLOW_PRIVATE is off)"
            ))),
            AddressClass::Forbidden => Err(AddressRefused(format!(
                "{ip} is a link-local, metadata or otherwise unroutable address"
            ))),
        }
    }

    /// What can be judged without DNS: the scheme and an IP-literal host. reqwest connects to
    /// an IP literal without asking the resolver, so this check is the only one such a URL
    /// gets: it runs before every request as well as at registration.
    pub fn check_url(&self, url: &Url) -> Result<(), AddressRefused> {
        if self.require_https && url.scheme() != "https" {
            return Err(AddressRefused(
                "agentUrl must use https in production".into(),
            ));
        }
        match url.host() {
            Some(Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6)),
            Some(Host::Domain(_)) => Ok(()),
            None => Err(AddressRefused("agentUrl has no host".into())),
        }
    }

    /// Registration: [`check_url`](Self::check_url), then every address the name resolves to
    /// now. A name that does not resolve (yet) is accepted: each connection is checked anyway.
    pub async fn check_registration(&self, url: &Url) -> Result<(), AddressRefused> {
        self.check_url(url)?;
        let (Some(Host::Domain(host)), Some(port)) = (url.host(), url.port_or_known_default())
        else {
            return Ok(());
        };
        let lookup = tokio::net::lookup_host((host, port));
        if let Ok(Ok(addresses)) = tokio::time::timeout(REGISTRATION_DNS_TIMEOUT, lookup).await {
            for address in addresses {
                self.check_ip(address.ip())
                    .map_err(|e| AddressRefused(format!("{host}: {e}")))?;
            }
        }
        Ok(())
    }
}

/// reqwest's resolver for agent calls: the system resolver, then the policy on every address.
/// A name with any refused address is refused whole, so a rebinding answer that mixes a public
/// and a private address cannot slip through on the second try.
pub struct CheckedResolver {
    policy: AddressPolicy,
}

impl CheckedResolver {
    pub fn new(policy: AddressPolicy) -> Arc<Self> {
        Arc::new(Self { policy })
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for address in &addresses {
                policy
                    .check_ip(address.ip())
                    .map_err(|e| AddressRefused(format!("{host}: {e}")))?;
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> AddressClass {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn metadata_and_link_local_are_forbidden_in_every_form() {
        for ip in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
        ] {
            assert_eq!(class(ip), AddressClass::Forbidden, "{ip}");
        }
    }

    #[test]
    fn loopback_and_private_ranges_are_private() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "10.0.0.5",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(class(ip), AddressClass::Private, "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "100.128.0.1",
            "8.8.8.8",
        ] {
            assert_eq!(class(ip), AddressClass::Public, "{ip}");
        }
    }

    #[test]
    fn odd_ipv4_spellings_are_parsed_as_the_address_they_are() {
        let policy = AddressPolicy {
            allow_private: false,
            require_https: false,
        };
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://[::ffff:7f00:1]/",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(policy.check_url(&url).is_err(), "{url}");
        }
    }
}
