//! The gateway's decisions: may this channel request go on ([`Engine::decide_channel`]), and is
//! this environment variable passed to the node (action `pass_env`).

use cedar_policy::{Entities, PolicySet};
use serde_json::{Value, json};

use super::cedar::{FALLBACK_CODE, clamp, hour_and_weekday, principal_entities, uid};
use super::{ChannelFacts, ChannelRequest, DenyReason, Engine, Policy, PolicyError};

impl Engine {
    /// May this channel request go on? Asked by the gateway for every request of a session,
    /// with the customer's policies. Pure. `Err` holds the reasons (a customer's with the
    /// `customer:` prefix); an evaluation error is a denial.
    pub fn decide_channel(
        &self,
        facts: &ChannelFacts,
        customer: &[Policy],
    ) -> Result<(), Vec<DenyReason>> {
        let set = self.combined(customer).map_err(policy_failure)?;
        if let Some(reasons) = self.evaluate_channel(&set, facts).map_err(policy_failure)? {
            return Err(explain_fallback(
                reasons,
                "request_not_allowed",
                format!(
                    "the {} request is not allowed through sallyport",
                    facts.request.kind()
                ),
            ));
        }
        let name = match &facts.request {
            ChannelRequest::Env { name } => name,
            ChannelRequest::Pty
            | ChannelRequest::Shell
            | ChannelRequest::Exec { .. }
            | ChannelRequest::Subsystem { .. }
            | ChannelRequest::WindowChange
            | ChannelRequest::Signal { .. }
            | ChannelRequest::DirectTcpip { .. }
            | ChannelRequest::TcpipForward { .. }
            | ChannelRequest::Agent
            | ChannelRequest::X11 => return Ok(()),
        };
        // An environment variable passes only when a permit of action `pass_env` names it (the
        // base allowlist, or a customer's own) and no forbid does.
        let entities = self.session_entities(facts).map_err(policy_failure)?;
        let action = uid("Action", "pass_env").map_err(policy_failure)?;
        let context = json!({"env_name": name, "node": facts.node, "login": facts.login});
        match self
            .authorize(
                &set,
                &entities,
                action,
                &facts.engineer,
                &facts.cluster,
                context,
            )
            .map_err(policy_failure)?
        {
            None => Ok(()),
            Some(reasons) => Err(explain_fallback(
                reasons,
                "environment_not_allowlisted",
                format!(
                    "the environment variable {name} is not passed to the node (allowed: LANG, \
                     LC_*, TERM, COLORTERM, TZ, and what the customer allows)"
                ),
            )),
        }
    }

    /// The engineer (in the group the grant came through) and the cluster, as entities.
    fn session_entities(&self, facts: &ChannelFacts) -> Result<Entities, PolicyError> {
        let groups: Vec<String> = facts
            .group
            .iter()
            .filter(|g| !g.is_empty())
            .cloned()
            .collect();
        let list = principal_entities(&facts.engineer, &groups, &facts.cluster, &facts.customer);
        Entities::from_json_value(Value::Array(list), Some(&self.schema))
            .map_err(|e| PolicyError::Internal(e.to_string()))
    }

    fn evaluate_channel(
        &self,
        set: &PolicySet,
        facts: &ChannelFacts,
    ) -> Result<Option<Vec<DenyReason>>, PolicyError> {
        let entities = self.session_entities(facts)?;
        let action = uid("Action", "channel")?;
        let r = &facts.request;
        let (command, subsystem, env_name, signal, target_host, target_port) = match r {
            ChannelRequest::Exec { command, .. } => (command.as_str(), "", "", "", "", 0),
            ChannelRequest::Subsystem { name } => ("", name.as_str(), "", "", "", 0),
            ChannelRequest::Env { name } => ("", "", name.as_str(), "", "", 0),
            ChannelRequest::Signal { name } => ("", "", "", name.as_str(), "", 0),
            ChannelRequest::DirectTcpip { host, port }
            | ChannelRequest::TcpipForward { host, port } => {
                ("", "", "", "", host.as_str(), i64::from(*port))
            }
            ChannelRequest::Pty
            | ChannelRequest::Shell
            | ChannelRequest::WindowChange
            | ChannelRequest::Agent
            | ChannelRequest::X11 => ("", "", "", "", "", 0),
        };
        let file_transfer = match r {
            ChannelRequest::Exec { file_transfer, .. } => file_transfer.as_str(),
            ChannelRequest::Subsystem { name } if name == "sftp" => "sftp",
            ChannelRequest::Pty
            | ChannelRequest::Shell
            | ChannelRequest::Subsystem { .. }
            | ChannelRequest::Env { .. }
            | ChannelRequest::WindowChange
            | ChannelRequest::Signal { .. }
            | ChannelRequest::DirectTcpip { .. }
            | ChannelRequest::TcpipForward { .. }
            | ChannelRequest::Agent
            | ChannelRequest::X11 => "",
        };
        let (hour, weekday) = hour_and_weekday(facts.now);
        let context = json!({
            "request": r.kind(),
            "file_transfer": file_transfer,
            "node": facts.node,
            "login": facts.login,
            "ticket": facts.ticket,
            "command": command,
            "subsystem": subsystem,
            "env_name": env_name,
            "signal": signal,
            "target_host": target_host,
            "target_port": target_port,
            "port_forwarding": facts.port_forwarding,
            "now": clamp(facts.now),
            "hour": hour,
            "weekday": weekday,
        });
        self.authorize(
            set,
            &entities,
            action,
            &facts.engineer,
            &facts.cluster,
            context,
        )
    }
}

/// An evaluation error is a denial that says so.
fn policy_failure(e: PolicyError) -> Vec<DenyReason> {
    vec![DenyReason {
        code: "policy_error".into(),
        message: format!("the policy could not be evaluated ({e}); the request is refused"),
    }]
}

/// When nothing but the default denial applies (no permit matched), say what was not allowed.
fn explain_fallback(mut reasons: Vec<DenyReason>, code: &str, message: String) -> Vec<DenyReason> {
    if let [only] = reasons.as_mut_slice()
        && only.code == FALLBACK_CODE
    {
        *only = DenyReason {
            code: code.into(),
            message,
        };
    }
    reasons
}
