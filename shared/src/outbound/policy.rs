//! Which addresses Postline may call: every URL it calls (receiver
//! endpoints, PINGs, token endpoints) is typed by a partner, so internal
//! addresses (loopback, private, link-local with the cloud metadata service,
//! CGNAT, unique-local, multicast, reserved) are refused unless the operator
//! allows a range with `POSTLINE_ALLOW_PRIVATE_NETWORKS`.
//!
//! Pure: classifying an address needs no I/O, so every rule is unit-tested.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is internal, in words an operator reads in an attempt log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalRange {
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 169.254/16 (cloud metadata), fe80::/10.
    LinkLocal,
    /// 100.64/10.
    SharedAddressSpace,
    /// fc00::/7.
    UniqueLocal,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// Documentation, benchmarking, protocol assignments, 240/4, deprecated
    /// site-local and other ranges no partner endpoint lives in.
    Reserved,
}

impl InternalRange {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private network",
            Self::LinkLocal => "link-local",
            Self::SharedAddressSpace => "carrier-grade NAT",
            Self::UniqueLocal => "unique-local",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
        }
    }
}

/// The internal range `ip` belongs to, or `None` for a public address.
/// IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4)
/// are judged by the IPv4 address they lead to.
pub fn internal_range(ip: IpAddr) -> Option<InternalRange> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<InternalRange> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        (0, _, _) => InternalRange::Unspecified,
        (127, _, _) => InternalRange::Loopback,
        (10, _, _) | (192, 168, _) => InternalRange::Private,
        (172, 16..=31, _) => InternalRange::Private,
        (169, 254, _) => InternalRange::LinkLocal,
        (100, 64..=127, _) => InternalRange::SharedAddressSpace,
        (224..=239, _, _) => InternalRange::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => InternalRange::Broadcast,
        (240..=255, _, _) => InternalRange::Reserved,
        // Protocol assignments, TEST-NET-1..3, benchmarking (RFC 5737, 2544, 6890).
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => InternalRange::Reserved,
        (198, 18..=19, _) => InternalRange::Reserved,
        _ => return None,
    };
    Some(range)
}

fn internal_v6(ip: Ipv6Addr) -> Option<InternalRange> {
    let segments = ip.segments();
    let range = if ip.is_unspecified() {
        InternalRange::Unspecified
    } else if ip.is_loopback() {
        InternalRange::Loopback
    } else if segments[0] & 0xffc0 == 0xfe80 {
        InternalRange::LinkLocal
    } else if segments[0] & 0xfe00 == 0xfc00 {
        InternalRange::UniqueLocal
    } else if segments[0] & 0xff00 == 0xff00 {
        InternalRange::Multicast
    } else if segments[0] & 0xffc0 == 0xfec0 // deprecated site-local
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x2001 && segments[1] == 0) // Teredo: hides an IPv4 peer
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only
        || segments[0] == 0
    // any other form of the ::/16 block that embeds nothing routable
    {
        InternalRange::Reserved
    } else {
        return None;
    };
    Some(range)
}

/// The IPv4 address an IPv6 address leads to: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail()),
        // `::` and `::1` are themselves, not 0.0.0.0 / 0.0.0.1.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail()),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// An address Postline will not call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination not allowed: {ip} is {}", range.name())]
pub struct NotAllowed {
    /// The refused address.
    pub ip: IpAddr,
    /// Why.
    pub range: InternalRange,
}

/// The rule: internal addresses are refused, except the ranges the operator allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// Refuses every internal address except those inside `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// The ranges allowed despite the rule.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    /// Whether Postline may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), NotAllowed> {
        let Some(range) = internal_range(ip) else {
            return Ok(());
        };
        // An allowed IPv4 range also covers that range's IPv6-mapped spellings.
        let canonical = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = self
            .allowed
            .iter()
            .any(|net| net.contains(&ip) || canonical.is_some_and(|v4| net.contains(&v4)));
        if allowed {
            Ok(())
        } else {
            Err(NotAllowed { ip, range })
        }
    }
}

/// Parses `POSTLINE_ALLOW_PRIVATE_NETWORKS`: comma-separated CIDRs (a bare
/// address means just that address); empty allows nothing.
pub fn parse_allowed(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| format!("{item:?} is not a CIDR such as 10.0.0.0/8 or fd00::/8"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let policy = AddressPolicy::default();
        for (address, range) in [
            ("127.0.0.1", InternalRange::Loopback),
            ("127.255.0.9", InternalRange::Loopback),
            ("::1", InternalRange::Loopback),
            ("0.0.0.0", InternalRange::Unspecified),
            ("0.1.2.3", InternalRange::Unspecified),
            ("::", InternalRange::Unspecified),
            ("10.1.2.3", InternalRange::Private),
            ("172.16.0.1", InternalRange::Private),
            ("172.31.255.255", InternalRange::Private),
            ("192.168.1.1", InternalRange::Private),
            ("169.254.169.254", InternalRange::LinkLocal),
            ("fe80::1", InternalRange::LinkLocal),
            ("100.64.0.1", InternalRange::SharedAddressSpace),
            ("100.127.255.254", InternalRange::SharedAddressSpace),
            ("fc00::1", InternalRange::UniqueLocal),
            ("fd12:3456::1", InternalRange::UniqueLocal),
            ("224.0.0.1", InternalRange::Multicast),
            ("239.255.255.250", InternalRange::Multicast),
            ("ff02::1", InternalRange::Multicast),
            ("255.255.255.255", InternalRange::Broadcast),
            ("240.0.0.1", InternalRange::Reserved),
            ("192.0.2.10", InternalRange::Reserved),
            ("198.18.0.1", InternalRange::Reserved),
            ("2001:db8::1", InternalRange::Reserved),
            ("fec0::1", InternalRange::Reserved),
            // IPv6 spellings of internal IPv4 addresses.
            ("::ffff:127.0.0.1", InternalRange::Loopback),
            ("::ffff:169.254.169.254", InternalRange::LinkLocal),
            ("::ffff:10.0.0.1", InternalRange::Private),
            ("::127.0.0.1", InternalRange::Loopback),
            ("64:ff9b::a9fe:a9fe", InternalRange::LinkLocal),
            ("2002:7f00:1::", InternalRange::Loopback),
            ("2002:c0a8:101::1", InternalRange::Private),
        ] {
            let refused = policy.check(ip(address)).unwrap_err();
            assert_eq!(refused.range, range, "{address}");
            assert!(refused.to_string().starts_with("destination not allowed: "));
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = AddressPolicy::default();
        for address in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert_eq!(policy.check(ip(address)), Ok(()), "{address}");
        }
    }

    #[test]
    fn an_allowed_range_lets_its_addresses_and_their_mapped_forms_through() {
        let policy = AddressPolicy::new(parse_allowed("127.0.0.0/8, fd00::/8").unwrap());
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("fd00::5")), Ok(()));
        assert!(policy.check(ip("::1")).is_err());
        assert!(policy.check(ip("10.0.0.1")).is_err());
        assert!(policy.check(ip("169.254.169.254")).is_err());
    }

    #[test]
    fn the_allow_list_parses_cidrs_and_bare_addresses_and_names_a_bad_item() {
        assert_eq!(parse_allowed("").unwrap(), vec![]);
        assert_eq!(
            parse_allowed("10.1.2.3, 192.168.0.0/16").unwrap(),
            vec![
                "10.1.2.3/32".parse::<IpNet>().unwrap(),
                "192.168.0.0/16".parse().unwrap()
            ]
        );
        // Host bits are dropped: 10.1.2.3/8 means 10.0.0.0/8.
        assert_eq!(
            parse_allowed("10.1.2.3/8").unwrap(),
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        let error = parse_allowed("10.0.0.0/8,internal").unwrap_err();
        assert!(error.contains("\"internal\""), "{error}");
    }
}
