//! Network rules the `http` and `tcp` grants share: how a granted host is written and
//! matched, which addresses a granted *name* may never lead to, and who a refusal is logged
//! for ([`Requester`]).
//!
//! A grant names a host in one of three ways: a name (`api.mail.example`), a name with its
//! leftmost labels left open (`*.partner.example`, one or more labels), or an IP address
//! (`127.0.0.1`, `[::1]`). Only a grant that writes an address literally opens an internal
//! address (loopback, private, link-local, cloud metadata, ...): a *name* that resolves to
//! one is refused, so a granted name whose DNS an attacker controls (or a wildcard that
//! covers `127.0.0.1.nip.io`) cannot be turned against the host's own network.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Who is asking: the job and handler a denied request or connection is logged with.
#[derive(Clone)]
pub(crate) struct Requester {
    pub job: Arc<str>,
    pub handler: Arc<str>,
}

/// A host as a grant names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name (lowercase ASCII).
    Name(String),
    /// Any name with one or more labels before this suffix; the suffix keeps its leading dot
    /// (`*.partner.example` is `.partner.example`).
    Subdomains(String),
    /// Exactly this address.
    Ip(IpAddr),
}

/// A host as a guest asks for it: a name (lowercased) or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl HostPattern {
    /// Parses the host part of a grant entry (`[::1]` for IPv6).
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        if let Some(ip) = parse_ip(text) {
            return Ok(HostPattern::Ip(ip));
        }
        let (wild, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        check_name(name)?;
        let name = name.to_ascii_lowercase();
        Ok(if wild {
            HostPattern::Subdomains(format!(".{name}"))
        } else {
            HostPattern::Name(name)
        })
    }

    /// Whether a guest asking for `host` is covered by this pattern.
    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Name(granted), Host::Name(name)) => granted == name,
            (HostPattern::Subdomains(suffix), Host::Name(name)) => {
                name.len() > suffix.len() && name.ends_with(suffix.as_str())
            }
            (HostPattern::Ip(granted), Host::Ip(ip)) => granted == ip,
            _ => false,
        }
    }
}

impl Host {
    /// Parses a requested host (`example.com`, `10.0.0.1`, `[::1]`); `None` if it is neither a
    /// plausible name nor an address.
    pub fn parse(text: &str) -> Option<Host> {
        if let Some(ip) = parse_ip(text) {
            return Some(Host::Ip(ip));
        }
        check_name(text).ok()?;
        Some(Host::Name(text.to_ascii_lowercase()))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// An address written `1.2.3.4`, `[::1]` or `::1`, mapped IPv4-in-IPv6 made plain IPv4.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// A DNS name of ASCII letters, digits, `-` and `_` in non-empty labels.
fn check_name(name: &str) -> Result<(), String> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!(
            "`{name}` is not a host name (ASCII labels; `*` only as the whole leftmost label)"
        ));
    }
    Ok(())
}

/// Splits `host:port` (`[v6]:port` for IPv6); the port is `None` when absent.
pub fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if text.starts_with('[') {
        let end = text
            .find(']')
            .ok_or_else(|| format!("`{text}` has an unclosed `[`"))?;
        let (host, rest) = text.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(format!("`{text}` has text after the address")),
        };
    }
    Ok(match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    })
}

/// Parses a port number, 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("`{text}` is not a port (1 to 65535)")),
    }
}

/// Whether `ip` is internal to the host or its network: what a granted name must never
/// resolve to. Loopback (127/8, ::1), private (10/8, 172.16/12, 192.168/16, fc00::/7),
/// link-local and cloud metadata (169.254/16, fe80::/10), shared CGNAT space (100.64/10),
/// "this network" (0/8, ::), broadcast and multicast; IPv4 mapped into IPv6 counts as IPv4.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

/// The addresses of `addrs` a granted name may lead to, and whether any were refused.
pub fn public_only(addrs: impl IntoIterator<Item = SocketAddr>) -> (Vec<SocketAddr>, bool) {
    let (public, internal): (Vec<_>, Vec<_>) =
        addrs.into_iter().partition(|a| !is_internal(a.ip()));
    (public, !internal.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> Host {
        Host::parse(text).unwrap()
    }

    #[test]
    fn patterns_match_names_subdomains_and_addresses() {
        let exact = HostPattern::parse("API.mail.example").unwrap();
        assert!(exact.matches(&host("api.mail.example")));
        assert!(!exact.matches(&host("x.api.mail.example")));
        let wild = HostPattern::parse("*.partner.example").unwrap();
        assert!(wild.matches(&host("a.partner.example")));
        assert!(wild.matches(&host("a.b.partner.example")));
        assert!(!wild.matches(&host("partner.example")));
        assert!(!wild.matches(&host("evilpartner.example")));
        let ip = HostPattern::parse("[::1]").unwrap();
        assert!(ip.matches(&host("::1")));
        assert!(!ip.matches(&host("localhost")));
        let mapped = HostPattern::parse("127.0.0.1").unwrap();
        assert!(mapped.matches(&host("[::ffff:127.0.0.1]")));
    }

    #[test]
    fn bad_hosts_are_refused() {
        for text in [
            "",
            "*",
            "*.",
            "a.*.example",
            "exa mple.com",
            "bücher.de",
            "a..b",
        ] {
            assert!(HostPattern::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for text in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(text.parse().unwrap()), "{text}");
        }
        for text in ["93.184.216.34", "172.32.0.1", "2606:4700::1111", "8.8.8.8"] {
            assert!(!is_internal(text.parse().unwrap()), "{text}");
        }
    }

    #[test]
    fn host_and_port_split_with_brackets() {
        assert_eq!(split_host_port("a.b:80").unwrap(), ("a.b", Some("80")));
        assert_eq!(split_host_port("[::1]:80").unwrap(), ("[::1]", Some("80")));
        assert_eq!(split_host_port("[::1]").unwrap(), ("[::1]", None));
        assert_eq!(split_host_port("a.b").unwrap(), ("a.b", None));
        assert!(split_host_port("[::1").is_err());
        assert!(parse_port("0").is_err() && parse_port("70000").is_err());
    }
}
