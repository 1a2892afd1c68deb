//! Certificate key ids: the string that sshd logs for every authentication, so it names the
//! engineer, the ticket and the grant.
//!
//! - engineer certificates (user CA): `sallyport:eng=<uid>;ticket=<T>;grant=<id>;cluster=<c>`
//! - per-session node certificates (node CA): `sallyport-session:sid=<id>;eng=<uid>;ticket=<T>`
//!
//! Every value must be non-empty, at most [`MAX_VALUE_LEN`] bytes and free of `;`, `=`,
//! whitespace and control characters. That is checked when a key id is built and when one is
//! parsed, so a value of these types always formats to a string that parses back to itself.
//! Parsing is strict: exact prefix, all fields, in order, nothing else.

use std::fmt;
use std::str::FromStr;

use crate::error::CaError;

/// Longest value accepted in a key id field (a grant id is a UUID; tickets and uids are short).
pub const MAX_VALUE_LEN: usize = 128;

const ENGINEER_PREFIX: &str = "sallyport:";
const ENGINEER_FIELDS: [&str; 4] = ["eng", "ticket", "grant", "cluster"];
const SESSION_PREFIX: &str = "sallyport-session:";
const SESSION_FIELDS: [&str; 3] = ["sid", "eng", "ticket"];

/// Checks one key id value; `field` names it in the error.
pub fn validate_value(field: &str, value: &str) -> Result<(), CaError> {
    if value.is_empty() {
        return Err(CaError::KeyId(format!("{field} is empty")));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(CaError::KeyId(format!(
            "{field} is longer than {MAX_VALUE_LEN} bytes"
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| *c == ';' || *c == '=' || c.is_whitespace() || c.is_control())
    {
        return Err(CaError::KeyId(format!(
            "{field} {value:?} contains the forbidden character {c:?}"
        )));
    }
    Ok(())
}

/// Splits `<prefix><f1>=<v1>;<f2>=<v2>...` into the values of exactly `fields`, in order.
fn parse_fields<'a, const N: usize>(
    s: &'a str,
    prefix: &str,
    fields: [&str; N],
) -> Result<[&'a str; N], CaError> {
    let rest = s
        .strip_prefix(prefix)
        .ok_or_else(|| CaError::KeyId(format!("{s:?} does not start with {prefix:?}")))?;
    let parts: Vec<&str> = rest.split(';').collect();
    if parts.len() != N {
        return Err(CaError::KeyId(format!(
            "{s:?} has {} fields, expected {N} ({})",
            parts.len(),
            fields.join(", ")
        )));
    }
    let mut values = [""; N];
    for ((slot, part), field) in values.iter_mut().zip(parts).zip(fields) {
        let value = part
            .strip_prefix(field)
            .and_then(|r| r.strip_prefix('='))
            .ok_or_else(|| CaError::KeyId(format!("{s:?}: expected field {field:?} here")))?;
        validate_value(field, value)?;
        *slot = value;
    }
    Ok(values)
}

/// Key id of an engineer certificate issued from a Grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId {
    engineer: String,
    ticket: String,
    grant: String,
    cluster: String,
}

impl KeyId {
    pub fn new(engineer: &str, ticket: &str, grant: &str, cluster: &str) -> Result<Self, CaError> {
        for (field, value) in ENGINEER_FIELDS
            .into_iter()
            .zip([engineer, ticket, grant, cluster])
        {
            validate_value(field, value)?;
        }
        Ok(Self {
            engineer: engineer.to_owned(),
            ticket: ticket.to_owned(),
            grant: grant.to_owned(),
            cluster: cluster.to_owned(),
        })
    }

    pub fn engineer(&self) -> &str {
        &self.engineer
    }
    pub fn ticket(&self) -> &str {
        &self.ticket
    }
    pub fn grant(&self) -> &str {
        &self.grant
    }
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ENGINEER_PREFIX}eng={};ticket={};grant={};cluster={}",
            self.engineer, self.ticket, self.grant, self.cluster
        )
    }
}

impl FromStr for KeyId {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let [engineer, ticket, grant, cluster] = parse_fields(s, ENGINEER_PREFIX, ENGINEER_FIELDS)?;
        Ok(Self {
            engineer: engineer.to_owned(),
            ticket: ticket.to_owned(),
            grant: grant.to_owned(),
            cluster: cluster.to_owned(),
        })
    }
}

/// Key id of a per-session certificate the gateway issues to reach a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKeyId {
    session: String,
    engineer: String,
    ticket: String,
}

impl SessionKeyId {
    pub fn new(session: &str, engineer: &str, ticket: &str) -> Result<Self, CaError> {
        for (field, value) in SESSION_FIELDS.into_iter().zip([session, engineer, ticket]) {
            validate_value(field, value)?;
        }
        Ok(Self {
            session: session.to_owned(),
            engineer: engineer.to_owned(),
            ticket: ticket.to_owned(),
        })
    }

    pub fn session(&self) -> &str {
        &self.session
    }
    pub fn engineer(&self) -> &str {
        &self.engineer
    }
    pub fn ticket(&self) -> &str {
        &self.ticket
    }
}

impl fmt::Display for SessionKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SESSION_PREFIX}sid={};eng={};ticket={}",
            self.session, self.engineer, self.ticket
        )
    }
}

impl FromStr for SessionKeyId {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let [session, engineer, ticket] = parse_fields(s, SESSION_PREFIX, SESSION_FIELDS)?;
        Ok(Self {
            session: session.to_owned(),
            engineer: engineer.to_owned(),
            ticket: ticket.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engineer_key_id_round_trips() {
        let id = KeyId::new("alice", "SUP-1234", "g-0001", "acme-prod").unwrap();
        let s = id.to_string();
        assert_eq!(
            s,
            "sallyport:eng=alice;ticket=SUP-1234;grant=g-0001;cluster=acme-prod"
        );
        assert_eq!(s.parse::<KeyId>().unwrap(), id);
        assert_eq!(id.engineer(), "alice");
        assert_eq!(id.ticket(), "SUP-1234");
        assert_eq!(id.grant(), "g-0001");
        assert_eq!(id.cluster(), "acme-prod");
    }

    #[test]
    fn session_key_id_round_trips() {
        let id = SessionKeyId::new("s-42", "alice", "SUP-1234").unwrap();
        let s = id.to_string();
        assert_eq!(s, "sallyport-session:sid=s-42;eng=alice;ticket=SUP-1234");
        assert_eq!(s.parse::<SessionKeyId>().unwrap(), id);
    }

    #[test]
    fn building_refuses_bad_values() {
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        for bad in [
            "", "a;b", "a=b", "a b", "a\tb", "a\nb", "a\0b", "a\u{7f}b", "a\u{a0}b", &long,
        ] {
            assert!(KeyId::new(bad, "T", "g", "c").is_err(), "eng {bad:?}");
            assert!(KeyId::new("e", bad, "g", "c").is_err(), "ticket {bad:?}");
            assert!(KeyId::new("e", "T", bad, "c").is_err(), "grant {bad:?}");
            assert!(KeyId::new("e", "T", "g", bad).is_err(), "cluster {bad:?}");
            assert!(SessionKeyId::new(bad, "e", "T").is_err(), "sid {bad:?}");
            assert!(SessionKeyId::new("s", bad, "T").is_err(), "eng {bad:?}");
            assert!(SessionKeyId::new("s", "e", bad).is_err(), "ticket {bad:?}");
        }
        assert!(KeyId::new(&"x".repeat(MAX_VALUE_LEN), "T", "g", "c").is_ok());
    }

    #[test]
    fn parsing_is_strict() {
        let cases = [
            // wrong or missing prefix
            "eng=a;ticket=T;grant=g;cluster=c",
            "sallyport-session:eng=a;ticket=T;grant=g;cluster=c",
            "Sallyport:eng=a;ticket=T;grant=g;cluster=c",
            " sallyport:eng=a;ticket=T;grant=g;cluster=c",
            // fields missing, extra, reordered, renamed, duplicated
            "sallyport:eng=a;ticket=T;grant=g",
            "sallyport:eng=a;ticket=T;grant=g;cluster=c;extra=x",
            "sallyport:eng=a;ticket=T;grant=g;cluster=c;",
            "sallyport:ticket=T;eng=a;grant=g;cluster=c",
            "sallyport:eng=a;ticket=T;grant=g;clusters=c",
            "sallyport:eng=a;ticket=T;grant=g;grant=c",
            // bad values
            "sallyport:eng=;ticket=T;grant=g;cluster=c",
            "sallyport:eng=a;ticket=T=U;grant=g;cluster=c",
            "sallyport:eng=a;ticket=T;grant=g;cluster=c ",
            "sallyport:eng=a b;ticket=T;grant=g;cluster=c",
            "sallyport:eng=a;ticket=T;grant=g\n;cluster=c",
            "sallyport:eng a;ticket=T;grant=g;cluster=c",
            "",
        ];
        for case in cases {
            assert!(case.parse::<KeyId>().is_err(), "accepted {case:?}");
        }
        for case in [
            "sallyport-session:sid=s;eng=e",
            "sallyport-session:eng=e;sid=s;ticket=T",
            "sallyport-session:sid=s;eng=e;ticket=T;x=y",
            "sallyport:sid=s;eng=e;ticket=T",
            "sallyport-session:sid=s;eng=e;ticket=",
        ] {
            assert!(case.parse::<SessionKeyId>().is_err(), "accepted {case:?}");
        }
    }

    /// Generated values and strings: building accepts exactly the values `validate_value`
    /// accepts, formatting then parsing gives the same key id, and a string that parses is
    /// exactly the formatting of what it parsed to (one spelling per key id).
    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Valid values, near misses (one forbidden character), and anything.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[^;=\\s\\p{Cc}]{1,20}",
                1 => ("[a-z]{0,4}", "[;= \\t\\n\\x00\\x7f\\u{a0}\\u{2028}]", "[a-z]{0,4}")
                    .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
                1 => Just("x".repeat(MAX_VALUE_LEN)),
                1 => Just("x".repeat(MAX_VALUE_LEN + 1)),
                1 => any::<String>(),
            ]
        }

        /// A key id string: a formatted one with a character changed, or anything.
        fn key_id_text() -> impl Strategy<Value = String> {
            let formatted = (value(), value(), value(), value())
                .prop_map(|(e, t, g, c)| {
                    format!("sallyport:eng={e};ticket={t};grant={g};cluster={c}")
                })
                .boxed();
            let session = (value(), value(), value())
                .prop_map(|(s, e, t)| format!("sallyport-session:sid={s};eng={e};ticket={t}"))
                .boxed();
            let mutated = (
                prop_oneof![formatted.clone(), session.clone()],
                any::<prop::sample::Index>(),
                "[;=:a ]?",
                0usize..3,
            )
                .prop_map(|(s, at, insert, cut)| {
                    let mut i = at.index(s.len() + 1);
                    while !s.is_char_boundary(i) {
                        i -= 1;
                    }
                    let end = (i + cut).min(s.len());
                    let end = (end..=s.len())
                        .find(|e| s.is_char_boundary(*e))
                        .unwrap_or(s.len());
                    format!("{}{insert}{}", &s[..i], &s[end..])
                });
            prop_oneof![formatted, session, mutated, any::<String>()]
        }

        proptest! {
            #![proptest_config(sallyport_audit::proptest_config(256))]

            #[test]
            fn values_build_and_round_trip(e in value(), t in value(), g in value(), c in value()) {
                let valid = [("eng", &e), ("ticket", &t), ("grant", &g), ("cluster", &c)]
                    .iter()
                    .all(|(f, v)| validate_value(f, v).is_ok());
                match KeyId::new(&e, &t, &g, &c) {
                    Ok(id) => {
                        prop_assert!(valid);
                        let parsed: KeyId = id.to_string().parse().unwrap();
                        prop_assert_eq!(&parsed, &id);
                        prop_assert_eq!(
                            [parsed.engineer(), parsed.ticket(), parsed.grant(), parsed.cluster()],
                            [e.as_str(), t.as_str(), g.as_str(), c.as_str()]
                        );
                    }
                    Err(_) => prop_assert!(!valid),
                }
                match SessionKeyId::new(&e, &t, &g) {
                    Ok(id) => {
                        let parsed: SessionKeyId = id.to_string().parse().unwrap();
                        prop_assert_eq!(&parsed, &id);
                        prop_assert_eq!(
                            [parsed.session(), parsed.engineer(), parsed.ticket()],
                            [e.as_str(), t.as_str(), g.as_str()]
                        );
                    }
                    Err(_) => prop_assert!(
                        [&e, &t, &g].iter().any(|v| validate_value("v", v).is_err())
                    ),
                }
            }

            #[test]
            fn what_parses_is_its_own_formatting(s in key_id_text()) {
                if let Ok(id) = s.parse::<KeyId>() {
                    prop_assert_eq!(id.to_string(), s.clone());
                }
                if let Ok(id) = s.parse::<SessionKeyId>() {
                    prop_assert_eq!(id.to_string(), s.clone());
                }
            }
        }
    }
}
