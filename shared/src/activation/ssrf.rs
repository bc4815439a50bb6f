//! Which addresses a webhook may reach. Partners are on the public internet: loopback, private, shared
//! (carrier-grade NAT), link-local (where cloud metadata services answer, 169.254.169.254 and fd00:ec2::254),
//! unique-local, multicast, reserved and documentation ranges are refused, including IPv4 addresses embedded in
//! IPv6 (mapped, translated, compatible, NAT64 in both prefixes, 6to4) and Teredo tunnels. A URL's host is read
//! the way a resolver reads it ([`literal_address`]: `2130706433`, `0x7f000001`, `0177.0.0.1` and `127.1` are
//! all 127.0.0.1) so that no spelling of an address slips past the check where it is defined. Shells check
//! every address a host name resolves to, and again on every redirect they follow.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether loopback may be reached: only for local development (`cdp up`'s demo partner), never in the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// Public addresses only.
    #[default]
    Public,
    /// Public addresses and loopback (127.0.0.0/8, ::1); every other private range stays refused.
    PublicAndLoopback,
}

/// Why `ip` may not be reached, or `None` when it may.
pub fn refused(ip: IpAddr, reach: Reach) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4, reach),
        IpAddr::V6(v6) => refused_v6(v6, reach),
    }
}

fn refused_v4(ip: Ipv4Addr, reach: Reach) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if a == 127 {
        return (reach != Reach::PublicAndLoopback).then_some("loopback address");
    }
    match (a, b, c) {
        (0, _, _) => Some("unspecified (\"this network\") address"),
        (10, _, _) | (192, 168, _) => Some("private address"),
        (172, 16..=31, _) => Some("private address"),
        (100, 64..=127, _) => Some("shared (carrier-grade NAT) address"),
        (169, 254, _) => Some("link-local address (cloud metadata services answer here)"),
        (192, 0, 0) => Some("IETF protocol assignment"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Some("documentation address"),
        (198, 18..=19, _) => Some("benchmarking address"),
        (224..=239, _, _) => Some("multicast address"),
        (240..=255, _, _) => Some("reserved or broadcast address"),
        _ => None,
    }
}

fn refused_v6(ip: Ipv6Addr, reach: Reach) -> Option<&'static str> {
    if ip == Ipv6Addr::LOCALHOST {
        return (reach != Reach::PublicAndLoopback).then_some("loopback address");
    }
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // IPv4 inside IPv6, in the last 32 bits: mapped (::ffff:a.b.c.d), translated (::ffff:0:a.b.c.d),
    // compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and NAT64's local-use prefix (64:ff9b:1::/48).
    let last = v4(s[6], s[7]);
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0)
        || s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || s[..3] == [0x64, 0xff9b, 1]
    {
        return refused_v4(last, reach).map(|_| "private address inside an IPv6 address");
    }
    // 6to4 (2002:a.b.c.d::/48) carries the IPv4 address in its second and third groups.
    if s[0] == 0x2002 {
        return refused_v4(v4(s[1], s[2]), reach).map(|_| "private address inside a 6to4 address");
    }
    match s[0] {
        // Teredo (2001:0::/32) tunnels to an IPv4 address hidden in the rest: never a partner's address.
        0x2001 if s[1] == 0 => Some("Teredo tunnel address"),
        0xfc00..=0xfdff => Some("unique-local (private) address"),
        0xfe80..=0xfebf => Some("link-local address"),
        0xfec0..=0xfeff => Some("site-local address"),
        0xff00..=0xffff => Some("multicast address"),
        0x2001 if s[1] == 0x0db8 => Some("documentation address"),
        0x0100 if s[1..4] == [0, 0, 0] => Some("discard-only address"),
        _ => None,
    }
}

/// The address a URL's host stands for when it is a literal one, read the way a resolver reads it: an IPv6
/// address in brackets (a zone identifier, `%25…`, is refused: it names this machine's interfaces), or an IPv4
/// address in any of the forms `inet_aton` and browsers accept — one to four parts, each decimal, octal
/// (`0177`) or hexadecimal (`0x7f`), the last filling the remaining bytes (`127.1`, `2130706433`), with one
/// trailing dot. `Ok(None)` for a host name; an error for a host that looks numeric but is no address.
pub fn literal_address(host: &str) -> Result<Option<IpAddr>, crate::Invalid> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| format!("{host} is not a valid IPv6 address"))?;
        if inner.contains('%') {
            return Err(
                format!("{host} names a network interface (zone identifier); webhooks go to public addresses").into()
            );
        }
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Some(IpAddr::V6(ip)))
            .map_err(|_| format!("{host} is not a valid IPv6 address").into());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    // As URLs are parsed by browsers: a host whose last label is a number is an IPv4 address or nothing.
    let last = name.rsplit('.').next().unwrap_or_default();
    let numeric = |part: &str| {
        !part.is_empty()
            && (part.bytes().all(|b| b.is_ascii_digit())
                || (part.starts_with("0x") || part.starts_with("0X"))
                    && part[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if !numeric(last) {
        return Ok(None);
    }
    ipv4_like_inet_aton(name)
        .map(|ip| Some(IpAddr::V4(ip)))
        .ok_or_else(|| format!("{host} is neither a host name nor a valid IPv4 address").into())
}

fn ipv4_like_inet_aton(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let value = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            if hex.is_empty() { 0 } else { u64::from_str_radix(hex, 16).ok()? }
        } else if part.len() > 1 && part.starts_with('0') {
            u64::from_str_radix(&part[1..], 8).ok()?
        } else {
            part.parse::<u64>().ok()?
        };
        values.push(value);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|v| *v > 255) || *last >= 1u64 << (8 * (4 - leading.len())) {
        return None;
    }
    let mut address = *last as u32;
    for (i, value) in leading.iter().enumerate() {
        address |= (*value as u32) << (8 * (3 - i));
    }
    Some(Ipv4Addr::from(address))
}
