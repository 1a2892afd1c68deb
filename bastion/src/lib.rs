//! sallyport-bastion: the data plane. The public **edge** checks engineers' certificates and
//! forwards `direct-tcpip` channels, unread, into the tunnel that the cluster's **gateway**
//! dialed out; the gateway terminates the inner SSH connection, connects to the node with a
//! per-session certificate and records everything into the audit spool.

pub mod broker_client;
pub mod config;
pub mod edge;
pub mod gateway;
pub mod pipe;
pub mod private;
pub mod record;
pub mod spool;
pub mod throttle;
pub mod trust;

/// russh server settings shared by the edge and the gateway.
/// Ciphers for sallyport's own client connections (gateway → edge tunnel, gateway → node): AES-GCM
/// first, which runs on the CPU's AES instructions where there are any.
pub fn client_preferred() -> russh::Preferred {
    use russh::cipher;
    russh::Preferred {
        cipher: std::borrow::Cow::Owned(vec![
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_CTR,
        ]),
        ..russh::Preferred::default()
    }
}

pub fn server_config(
    keys: Vec<russh::keys::PrivateKey>,
    certificates: Vec<russh::keys::Certificate>,
    idle: std::time::Duration,
) -> russh::server::Config {
    use russh::{MethodKind, MethodSet, Preferred, cipher};
    // russh offers no AES-GCM unless asked; OpenSSH clients prefer it on machines with AES-NI.
    let preferred = Preferred {
        cipher: std::borrow::Cow::Owned(vec![
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
            cipher::AES_256_CTR,
        ]),
        ..Preferred::default()
    };
    russh::server::Config {
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: std::time::Duration::from_millis(300),
        auth_rejection_time_initial: Some(std::time::Duration::from_millis(0)),
        keys,
        certificates,
        inactivity_timeout: Some(idle),
        keepalive_interval: Some(std::time::Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        preferred,
        ..Default::default()
    }
}

/// One of at most `limit` things open at once (channels of a session, forwards of a connection),
/// counted in a shared counter while the slot lives.
pub struct Slot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Slot {
    /// A slot, or `None` when `limit` are taken already.
    pub fn take(
        count: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
        limit: usize,
    ) -> Option<Slot> {
        let slot = Slot(count.clone());
        let taken = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (taken < limit).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Add the fields of the JSON object `from` to the object `into` (an audit event's common fields
/// and its own).
/// Audit fields a long-lived task keeps for the events it may write (a session's or a channel's
/// common fields): held as their JSON text, shared, and made a `Value` when an event is written.
/// A `Value` object of ten fields costs over a KiB held; its text, a few hundred bytes.
#[derive(Clone, Debug)]
pub struct Fields(std::sync::Arc<str>);

impl Fields {
    pub fn new(v: &serde_json::Value) -> Fields {
        Fields(v.to_string().into())
    }

    /// The fields, to add an event's own to.
    pub fn value(&self) -> serde_json::Value {
        // Written by `new` from a Value: it parses back (an object stays an object).
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

pub fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (serde_json::Value::Object(m), serde_json::Value::Object(f)) = (into, from) {
        m.extend(f);
    }
}

/// `tokio::spawn` in the current span: a task a session starts (a channel's bridge, a forward,
/// a watcher) logs under that session's span (`session` at the gateway, `connection` at the
/// edge).
pub(crate) fn spawn_in_span<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(tracing::Instrument::in_current_span(task))
}

/// A login name as typed, made safe for logs and audit records.
pub fn sanitize_login(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn fields_kept_as_text_give_back_the_same_value() {
        let v = json!({"session": "s-1", "channel": 0, "engineer": "alice", "ticket": null,
            "nested": {"a": [1, 2.5, "é\u{0}x"]}, "big": u64::MAX, "neg": -3});
        let f = super::Fields::new(&v);
        assert_eq!(f.value(), v);
        assert_eq!(f.clone().value(), v);
        let mut d = f.value();
        super::merge(&mut d, json!({"command": "ls"}));
        assert_eq!(d["command"], "ls");
        assert_eq!(f.value(), v, "adding to one copy changes nothing kept");
    }
}
