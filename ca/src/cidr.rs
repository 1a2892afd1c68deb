//! CIDR networks, for the `source-address` critical option of certificates.
//!
//! Parsing is strict: `addr/len` with the host bits zero, or a bare address (a single host).
//! `10.0.0.5/24` is refused rather than guessed at, so that what a customer wrote and what the
//! certificate enforces cannot differ.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::CaError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
    /// dual-stack socket reports IPv4 peers) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_v4(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_v6(self.prefix) == u128::from(net)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| CaError::Network {
            value: s.to_owned(),
            reason,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| err("prefix length out of range"))?,
            Some(_) => return Err(err("prefix length is not a number")),
        };
        let host_bits_zero = match network {
            IpAddr::V4(n) => u32::from(n) & !mask_v4(prefix) == 0,
            IpAddr::V6(n) => u128::from(n) & !mask_v6(prefix) == 0,
        };
        if !host_bits_zero {
            return Err(err("host bits are set; write the network address"));
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.168.1.0/24", "192.168.1.255", true),
            ("192.168.1.0/24", "192.168.2.1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7/32", "192.168.1.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("10.0.0.0/8", "::ffff:10.9.9.9", true),
            ("2001:db8::/32", "2001:db8:1::5", true),
            ("2001:db8::/32", "2001:db9::5", false),
            ("::/0", "::1", true),
            ("::1", "::1", true),
            ("::1/128", "127.0.0.1", false),
        ];
        for (cidr, ip, want) in cases {
            let c: Cidr = cidr.parse().unwrap();
            assert_eq!(c.contains(ip.parse().unwrap()), *want, "{cidr} ∋ {ip}");
        }
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.5/24",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            " 10.0.0.0/8",
            "10.0.0/8",
            "host.example/32",
            "2001:db8::/129",
            "2001:db8::1/64",
            "10.0.0.0/8,11.0.0.0/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "accepted {bad:?}");
        }
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
    }

    /// Generated networks and strings: a network formats to a string that parses back to it,
    /// membership is "the masked address is the network", a network written with host bits set
    /// is refused, and any string is refused or parses to a network that formats and parses
    /// back to itself.
    mod properties {
        use std::net::{Ipv4Addr, Ipv6Addr};

        use proptest::prelude::*;

        use super::*;

        fn ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
                any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
                // IPv4-mapped IPv6, as a dual-stack socket reports IPv4 peers.
                any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
            ]
        }

        fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
            match ip {
                IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix))),
                IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix))),
            }
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                (ip(), 0u16..140).prop_map(|(ip, p)| format!("{ip}/{p}")),
                ip().prop_map(|ip| ip.to_string()),
                "[0-9a-f:./]{0,48}",
                "[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9+ -]{0,4}",
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(sallyport_audit::proptest_config(512))]

            #[test]
            fn networks_round_trip_and_contain_what_they_mask(
                ip in ip(),
                prefix in any::<u8>(),
                probe in ip(),
            ) {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let prefix = prefix % (max + 1);
                let net = masked(ip, prefix);
                let cidr: Cidr = format!("{net}/{prefix}").parse().unwrap();
                prop_assert_eq!((cidr.network(), cidr.prefix()), (net, prefix));
                prop_assert_eq!(cidr.to_string().parse::<Cidr>().unwrap(), cidr);
                prop_assert!(cidr.contains(net) || net.to_canonical() != net, "{} not in {}", net, cidr);
                let canonical = probe.to_canonical();
                let want = canonical.is_ipv4() == net.is_ipv4() && masked(canonical, prefix) == net;
                prop_assert_eq!(cidr.contains(probe), want);
                if ip != net {
                    let text = format!("{ip}/{prefix}");
                    prop_assert!(text.parse::<Cidr>().is_err(), "accepted {}", text);
                }
            }

            #[test]
            fn any_string_is_refused_or_round_trips(s in text()) {
                if let Ok(cidr) = s.parse::<Cidr>() {
                    prop_assert_eq!(cidr.to_string().parse::<Cidr>().unwrap(), cidr);
                    let max = if cidr.network().is_ipv4() { 32 } else { 128 };
                    prop_assert!(cidr.prefix() <= max, "prefix {}", cidr.prefix());
                }
            }
        }
    }
}
