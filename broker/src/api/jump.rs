//! The jump hop handed out with each certificate: which edges engineers may dial and which host
//! keys they pin for them. A pure decision over the broker's config and the edges'
//! registrations.

use crate::state::Live;
use crate::store::EdgeRegistration;

/// An edge that registered within this many seconds is up (each registers every minute).
pub const EDGE_FRESH_SECS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    /// The addresses engineers may dial, the first one as `edge`.
    pub edges: Vec<String>,
    /// Every edge's host key, pinned under the one alias.
    pub host_keys: Vec<String>,
}

impl Jump {
    /// The config's addresses win (`edge_address`, `edge_addresses`: a balancer's, or edges
    /// listed by hand). Else the addresses of the edges that registered lately, the latest
    /// first — or, when none did lately, of every edge that ever did, so that engineers are
    /// never left without one. Keys: the config's, then every registered edge's.
    pub fn of(live: &Live, registered: &[EdgeRegistration], now: u64) -> Jump {
        Jump::decide(&live.edges, &live.edge_host_keys, registered, now)
    }

    fn decide(
        edges: &[String],
        host_keys: &[String],
        registered: &[EdgeRegistration],
        now: u64,
    ) -> Jump {
        let mut jump = Jump {
            edges: edges.to_vec(),
            host_keys: Vec::new(),
        };
        if jump.edges.is_empty() {
            let fresh = |e: &EdgeRegistration| e.updated_at + EDGE_FRESH_SECS >= now;
            let any_fresh = registered.iter().any(|e| e.address.is_some() && fresh(e));
            for e in registered {
                let Some(address) = &e.address else { continue };
                if (fresh(e) || !any_fresh) && !jump.edges.contains(address) {
                    jump.edges.push(address.clone());
                }
            }
        }
        for key in host_keys
            .iter()
            .map(|k| k.trim())
            .chain(registered.iter().map(|e| e.host_key.as_str()))
        {
            if !jump.host_keys.iter().any(|k| k == key) {
                jump.host_keys.push(key.to_string());
            }
        }
        jump
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, address: Option<&str>, updated_at: u64) -> EdgeRegistration {
        EdgeRegistration {
            name: name.into(),
            host_key: format!("ssh-ed25519 {name}"),
            address: address.map(Into::into),
            updated_at,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_jump_hop_by_config_and_registrations() {
        let now = 10_000;
        let stale = now - EDGE_FRESH_SECS - 1;
        let a = reg("a", Some("a:22"), now - 30);
        let b = reg("b", Some("b:22"), now - 90);
        let old = reg("old", Some("old:22"), stale);
        let keyless = reg("n", None, now);
        // (config edges, registrations) -> edges handed out
        let table: Vec<(Vec<String>, Vec<EdgeRegistration>, Vec<String>)> = vec![
            // The config wins, whatever registered.
            (
                strings(&["lb:22"]),
                vec![a.clone(), b.clone()],
                strings(&["lb:22"]),
            ),
            // Every edge that registered lately, in the store's order (latest first).
            (
                vec![],
                vec![a.clone(), b.clone(), old.clone()],
                strings(&["a:22", "b:22"]),
            ),
            // None lately: every edge that ever did.
            (vec![], vec![old.clone()], strings(&["old:22"])),
            // An edge without an address is nobody's jump hop.
            (
                vec![],
                vec![keyless.clone(), old.clone()],
                strings(&["old:22"]),
            ),
            (vec![], vec![], vec![]),
            // The same address twice is handed out once.
            (
                vec![],
                vec![a.clone(), reg("a2", Some("a:22"), now)],
                strings(&["a:22"]),
            ),
        ];
        for (config, registered, want) in table {
            let jump = Jump::decide(&config, &[], &registered, now);
            assert_eq!(jump.edges, want, "{config:?} {registered:?}");
        }
    }

    #[test]
    fn every_edge_key_is_pinned_once() {
        let jump = Jump::decide(
            &[],
            &strings(&[" ssh-ed25519 a\n", "ssh-ed25519 cfg"]),
            &[reg("a", Some("a:22"), 1), reg("b", None, 1)],
            10_000,
        );
        assert_eq!(
            jump.host_keys,
            strings(&["ssh-ed25519 a", "ssh-ed25519 cfg", "ssh-ed25519 b"])
        );
    }
}
