//! Port forwards asked for in a session: `direct-tcpip` (as `ssh -L`), opened from the node once
//! the policy, the certificate and a moderated session's observer allow it, and joined unread
//! (`crate::pipe`); remote forwards (`ssh -R`), which this gateway never serves.

use std::sync::atomic::Ordering;

use russh::server::{ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelOpenFailure};
use sallyport_audit::writers::GatewayKind;
use sallyport_ca::policy::ChannelRequest;
use serde_json::json;

use super::EngineerSession;

const NO_OBSERVER: &str = "this access requires that an approver of the customer watches the \
session; none has joined yet";

/// Whether a `direct-tcpip` forward may go on (pure), once it has a channel slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ForwardVerdict {
    /// Open it on the node.
    Open,
    /// The policy refused it (audited by the policy's question), with what the engineer reads.
    Policy(String),
    /// The policy allows it, the certificate does not (`permit-port-forwarding`).
    NotCertified,
    /// A moderated session forwards nothing before an observer joined.
    NoObserver,
}

/// The policy's answer first, then the certificate's permission, then the observer.
pub(super) fn forward_verdict(
    policy: Result<(), String>,
    certified: bool,
    released: bool,
) -> ForwardVerdict {
    match policy {
        Err(message) => ForwardVerdict::Policy(message),
        Ok(()) if !certified => ForwardVerdict::NotCertified,
        Ok(()) if !released => ForwardVerdict::NoObserver,
        Ok(()) => ForwardVerdict::Open,
    }
}

/// A refusal the engineer's ssh prints ("open failed: administratively prohibited:
/// sallyport: ...").
fn prohibited(reason: &str) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: ChannelOpenFailure::AdministrativelyProhibited.code(),
        reason: reason.trim_end().to_string(),
    }
}

impl EngineerSession {
    /// `ssh -R`: not supported by the gateway whatever the policy says (the base policy refuses
    /// it); refused and audited.
    pub(super) async fn remote_forward(&mut self, address: &str, port: u32) {
        let request = ChannelRequest::TcpipForward {
            host: address.to_string(),
            port,
        };
        if let Err(message) = self.ask(None, request).await {
            tracing::debug!(message, "remote forwarding refused");
        } else {
            self.audit(GatewayKind::ForwardRefused, json!({"request": "tcpip_forward", "target": format!("{address}:{port}"), "reason": "remote port forwarding is not supported by this gateway"})).await;
        }
    }

    /// `ssh -L`: the node's sshd opens the connection from the node, as `ssh -L` to the node
    /// would; recorded before any byte reaches the target.
    pub(super) async fn direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        (host, port): (&str, u32),
        (originator_address, originator_port): (&str, u32),
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) {
        let target = format!("{host}:{port}");
        let request = ChannelRequest::DirectTcpip {
            host: host.to_string(),
            port,
        };
        // The certificate's permit-port-forwarding is also checked here, apart from the policy.
        let certified = self
            .identity
            .as_ref()
            .is_some_and(|i| i.permit_port_forwarding());
        let Some(slot) = self.channel_slot("direct_tcpip").await else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return;
        };
        let policy = self.ask(None, request).await;
        let released = self.released.load(Ordering::SeqCst);
        match forward_verdict(policy, certified, released) {
            ForwardVerdict::Open => {}
            ForwardVerdict::Policy(message) => {
                reply.reject(prohibited(&message)).await;
                return;
            }
            ForwardVerdict::NotCertified => {
                let reason = "the certificate does not allow port forwarding";
                self.audit(
                    GatewayKind::ForwardRefused,
                    json!({"request": "direct_tcpip", "target": target, "reason": reason}),
                )
                .await;
                reply
                    .reject(prohibited(&format!("sallyport: {reason}")))
                    .await;
                return;
            }
            ForwardVerdict::NoObserver => {
                self.audit(
                    GatewayKind::ForwardRefused,
                    json!({"request": "direct_tcpip", "target": target, "code": "no_observer",
                           "reason": NO_OBSERVER}),
                )
                .await;
                reply
                    .reject(prohibited(&format!("sallyport: {NO_OBSERVER}")))
                    .await;
                return;
            }
        }
        if !self
            .audit(
                GatewayKind::Forward,
                json!({"request": "direct-tcpip", "target": target}),
            )
            .await
        {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return;
        }
        if let Err(e) = self.ensure_upstream().await {
            self.node_failed(e, reply, session).await;
            return;
        }
        let Some(up) = self.upstream.as_ref() else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        };
        match up
            .channel_open_direct_tcpip(host, port, originator_address, originator_port)
            .await
        {
            Ok(node_channel) => {
                reply.accept().await;
                crate::spawn_in_span(async move {
                    crate::pipe::join(channel, node_channel, || {}, |_| async {}).await;
                    drop(slot);
                });
            }
            Err(e) => {
                self.audit(
                    GatewayKind::ForwardFailed,
                    json!({"target": target, "reason": e.to_string()}),
                )
                .await;
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
    }
}
