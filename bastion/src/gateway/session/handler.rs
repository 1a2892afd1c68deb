//! The russh side of an engineer session: each callback of the inner SSH server is passed to the
//! [`EngineerSession`] that owns the session's state and decides, and holds nothing itself.
//! Data, extended data and EOF from the engineer are not callbacks here: they travel through the
//! channel's queue to the channel's bridge task (`bridge.rs`), in order, and the callbacks for
//! them keep russh's defaults.

use std::sync::Arc;

use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, Pty, Sig};
use tokio::sync::Mutex;

use super::EngineerSession;

/// The handler russh runs for one connection; the session it calls is shared with the task that
/// runs the connection ([`super::serve`]), which ends the session once the connection is over.
pub(super) struct Adapter(pub Arc<Mutex<EngineerSession>>);

impl russh::server::Handler for Adapter {
    type Error = russh::Error;

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        Ok(self.0.lock().await.certificate(user, cert).await)
    }

    async fn auth_certificate_refused(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<(), Self::Error> {
        self.0.lock().await.certificate_refused(user, cert).await;
        Ok(())
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.0.lock().await.authenticated(session)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.0
            .lock()
            .await
            .open_session(channel, reply, session)
            .await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = (col_width, row_height, pix_width, pix_height);
        let mut s = self.0.lock().await;
        s.pty(channel, term, size, modes, session).await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.0.lock().await.env(channel, name, value, session).await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.0.lock().await.shell(channel, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.0.lock().await.exec(channel, data, session).await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.0.lock().await.subsystem(channel, name, session).await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = (col_width, row_height, pix_width, pix_height);
        let mut s = self.0.lock().await;
        s.window_change(channel, size, session).await
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.0.lock().await.signal(channel, signal, session).await
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.0.lock().await.agent(channel, session).await?;
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.0.lock().await.x11(channel, session).await
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.0.lock().await.remote_forward(address, *port).await;
        Ok(false)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let originator = (originator_address, originator_port);
        let mut s = self.0.lock().await;
        s.direct_tcpip(channel, (host, port), originator, reply, session)
            .await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.0.lock().await.channel_closed(channel);
        Ok(())
    }
}
