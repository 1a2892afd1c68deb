//! Distinguished names (RFC 4514), parsed and compared the way an LDAP server compares them for
//! the attributes that name groups (`cn`, `ou`, `dc`: case-insensitive, insignificant spaces
//! ignored), so that a group is identified by its whole DN and never by its first RDN alone:
//! `cn=support-l2,ou=elsewhere,dc=example,dc=com` is not `cn=support-l2,ou=groups,...`.
//! Pure: no I/O.

/// One `type=value` of an RDN: the type in lower case, the value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ava {
    attr: String,
    value: String,
}

/// A parsed DN: its RDNs from the entry up to the root; an RDN has one or more AVAs (`+`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dn(Vec<Vec<Ava>>);

impl Dn {
    /// Parse `s` (RFC 4514, leniently: spaces around `=`, `,` and `+` are allowed and ignored).
    /// `None` when it is not a DN. The empty string is the root DN (no RDN).
    pub fn parse(s: &str) -> Option<Dn> {
        if s.trim().is_empty() {
            return Some(Dn(Vec::new()));
        }
        let mut rdns = Vec::new();
        for rdn in split_unescaped(s, b',')? {
            let mut avas = Vec::new();
            for ava in split_unescaped(rdn, b'+')? {
                avas.push(parse_ava(ava)?);
            }
            avas.sort_by_cached_key(|a| (a.attr.clone(), normalize(&a.value)));
            rdns.push(avas);
        }
        Some(Dn(rdns))
    }

    /// The two DNs name the same entry (types case-insensitive, values compared with case and
    /// insignificant spaces folded).
    pub fn same(&self, other: &Dn) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| same_rdn(a, b))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

fn same_rdn(a: &[Ava], b: &[Ava]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.attr == y.attr && normalize(&x.value) == normalize(&y.value))
}

/// The AccessGroup name of the group entry `dn` when it is a group under `base` named by
/// `attr`: exactly one RDN more than `base`, that RDN single-valued with type `attr`, and the
/// rest the same DN as `base`. The name is the RDN's value, unescaped. Anything else (another
/// branch, a deeper entry, a multi-valued RDN, another naming attribute, not a DN): `None`.
pub fn group_name(dn: &str, base: &Dn, attr: &str) -> Option<String> {
    let dn = Dn::parse(dn)?;
    let (first, rest) = dn.0.split_first()?;
    let [ava] = first.as_slice() else {
        return None;
    };
    let name_ok = ava.attr == attr.to_ascii_lowercase() && !ava.value.trim().is_empty();
    (name_ok && Dn(rest.to_vec()).same(base)).then(|| ava.value.clone())
}

/// Case folded, runs of spaces collapsed, trimmed: how `cn`, `ou` and `dc` values compare.
fn normalize(v: &str) -> String {
    v.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Split at `sep` where it is not escaped with `\`. `None` on a dangling `\` at the end.
fn split_unescaped(s: &str, sep: u8) -> Option<Vec<&str>> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                if i + 1 >= bytes.len() {
                    return None;
                }
                i += 2;
            }
            c if c == sep => {
                parts.push(&s[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    parts.push(&s[start..]);
    Some(parts)
}

fn parse_ava(s: &str) -> Option<Ava> {
    let (attr, value) = s.split_once('=')?;
    let attr = attr.trim();
    let descr = attr.starts_with(|c: char| c.is_ascii_alphabetic())
        && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !attr.is_empty()
        && attr
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if !(descr || oid) {
        return None;
    }
    Some(Ava {
        attr: attr.to_ascii_lowercase(),
        value: unescape(value)?,
    })
}

/// RFC 4514 value: `\` + a special character, or `\` + two hex digits (a UTF-8 byte);
/// unescaped spaces at either end are dropped. A `#hex` (BER) value is kept as written, so it
/// never equals a string value.
fn unescape(v: &str) -> Option<String> {
    let v = v.trim_start_matches(' ');
    if v.starts_with('#') {
        return Some(v.trim_end_matches(' ').to_string());
    }
    let bytes = v.as_bytes();
    // (byte, escaped)
    let mut out: Vec<(u8, bool)> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let next = *bytes.get(i + 1)?;
            // two hex digits exactly (from_str_radix alone would take a sign: `\+b`)
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push((b, true));
                    i += 3;
                }
                None => {
                    if !matches!(
                        next,
                        b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' | b' ' | b'#' | b'='
                    ) {
                        return None;
                    }
                    out.push((next, true));
                    i += 2;
                }
            }
        } else {
            out.push((bytes[i], false));
            i += 1;
        }
    }
    while out.last() == Some(&(b' ', false)) {
        out.pop();
    }
    String::from_utf8(out.into_iter().map(|(b, _)| b).collect()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Dn {
        Dn::parse("ou=groups,dc=example,dc=com").unwrap()
    }

    #[test]
    fn group_names_by_full_dn() {
        let ok = [
            ("cn=support-l2,ou=groups,dc=example,dc=com", "support-l2"),
            // what servers return differs in case and spacing, not in meaning
            ("CN=support-l2,OU=Groups,DC=Example,DC=com", "support-l2"),
            (
                "cn = support-l2 , ou=groups, dc=example,dc=com",
                "support-l2",
            ),
            ("cn=Support-L2,ou=groups,dc=example,dc=com", "Support-L2"),
            // escapes are undone in the name
            ("cn=support\\2Dl2,ou=groups,dc=example,dc=com", "support-l2"),
            ("cn=a\\,b,ou=groups,dc=example,dc=com", "a,b"),
            ("cn=a\\+b,ou=groups,dc=example,dc=com", "a+b"),
        ];
        for (dn, name) in ok {
            assert_eq!(group_name(dn, &base(), "cn").as_deref(), Some(name), "{dn}");
        }
        let bad = [
            // the look-alike: same first RDN, another branch
            "cn=support-l2,ou=elsewhere,dc=example,dc=com",
            // deeper under the base
            "cn=support-l2,ou=team,ou=groups,dc=example,dc=com",
            // the base itself, and above it
            "ou=groups,dc=example,dc=com",
            "dc=example,dc=com",
            // another suffix
            "cn=support-l2,ou=groups,dc=example,dc=org",
            "cn=support-l2,ou=groups,dc=example,dc=com,dc=evil",
            // an escaped comma is part of the value, not a separator
            "cn=support-l2\\,ou=groups,dc=example,dc=com",
            // another naming attribute, a multi-valued RDN, an empty name
            "ou=support-l2,ou=groups,dc=example,dc=com",
            "cn=support-l2+ou=x,ou=groups,dc=example,dc=com",
            "cn=,ou=groups,dc=example,dc=com",
            // not DNs
            "support-l2",
            "cn=x\\",
            "cn=x\\zz,ou=groups,dc=example,dc=com",
            "c n=x,ou=groups,dc=example,dc=com",
            "",
        ];
        for dn in bad {
            assert_eq!(group_name(dn, &base(), "cn"), None, "{dn}");
        }
    }

    #[test]
    fn same_dn() {
        let a = Dn::parse("ou=groups,dc=example,dc=com").unwrap();
        for same in [
            "OU=groups,DC=example,DC=com",
            "ou=Groups , dc=EXAMPLE,dc=com",
            "ou=gr\\6fups,dc=example,dc=com",
        ] {
            assert!(a.same(&Dn::parse(same).unwrap()), "{same}");
        }
        for other in ["ou=groups,dc=example", "ou=group,dc=example,dc=com", ""] {
            assert!(!a.same(&Dn::parse(other).unwrap()), "{other}");
        }
        assert!(Dn::parse("").unwrap().is_root());
        // multi-valued RDNs compare as sets
        assert!(
            Dn::parse("cn=a+uid=b,dc=x")
                .unwrap()
                .same(&Dn::parse("UID=b+cn=A,dc=x").unwrap())
        );
    }
}
