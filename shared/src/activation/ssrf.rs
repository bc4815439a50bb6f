//! Which addresses a webhook may reach. Partners are on the public internet: loopback, private, shared
//! (carrier-grade NAT), link-local (where cloud metadata services answer, 169.254.169.254 and fd00:ec2::254),
//! unique-local, multicast, reserved and documentation ranges are refused, including IPv4 addresses embedded in
//! IPv6 (mapped, compatible, NAT64). Shells check every address a host name resolves to, and again on every
//! redirect they follow.

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
    // IPv4 inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d).
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return refused_v4(embedded, reach);
    }
    match s[0] {
        0xfc00..=0xfdff => Some("unique-local (private) address"),
        0xfe80..=0xfebf => Some("link-local address"),
        0xfec0..=0xfeff => Some("site-local address"),
        0xff00..=0xffff => Some("multicast address"),
        0x2001 if s[1] == 0x0db8 => Some("documentation address"),
        0x0100 if s[1..4] == [0, 0, 0] => Some("discard-only address"),
        _ => None,
    }
}
