//! The fields of an OCSF event: the class's required ones, the endpoints, the users, the file
//! and the message, with everything of ours kept under `unmapped`.

use serde_json::{Map, Value, json};

use super::{Class, OCSF_VERSION, Status, place};
use crate::audit::AuditRecord;
use sallyport_audit::writers::Role;

fn s<'a>(d: &'a Value, k: &str) -> Option<&'a str> {
    d.get(k).and_then(Value::as_str).filter(|v| !v.is_empty())
}

/// `ip:port` (or `[v6]:port`) as an OCSF network endpoint; otherwise the text as its name.
fn endpoint_of_peer(peer: &str) -> Value {
    match peer.parse::<std::net::SocketAddr>() {
        Ok(a) => json!({"ip": a.ip().to_string(), "port": a.port()}),
        Err(_) => match peer.parse::<std::net::IpAddr>() {
            Ok(ip) => json!({"ip": ip.to_string()}),
            Err(_) => json!({"name": peer}),
        },
    }
}

/// The node an event is about, as an OCSF network endpoint.
fn node_endpoint(d: &Value) -> Option<Value> {
    let node = s(d, "node")?;
    let mut e = Map::new();
    e.insert("name".into(), json!(node));
    let hostname = match (s(d, "host"), s(d, "cluster")) {
        (Some(h), _) => Some(h.to_string()),
        (None, Some(c)) => Some(format!("{node}.{c}")),
        (None, None) => None,
    };
    if let Some(h) = hostname {
        e.insert("hostname".into(), json!(h));
    }
    if let Some(c) = s(d, "cluster") {
        e.insert("domain".into(), json!(c));
    }
    e.insert("svc_name".into(), json!("ssh"));
    Some(Value::Object(e))
}

fn user(name: &str) -> Value {
    json!({"name": name, "type_id": 1, "type": "User"})
}

/// The one who acted in a broker event, by its label (`reviewer:bob`, `approver:acme:carol`,
/// `operator:config`, `gateway:gw-1`...).
fn label_user(label: &str) -> Value {
    let system = label.starts_with("gateway:") || label.starts_with("edge:");
    let admin = label.starts_with("operator:");
    let (id, name) = if system {
        (4, "Service")
    } else if admin {
        (2, "Admin")
    } else {
        (1, "User")
    };
    json!({"name": label, "type_id": id, "type": name})
}

fn rfc3339(ms: u64) -> String {
    crate::timefmt::millis(ms)
}

/// The OCSF event of one stored record.
pub fn event(r: &AuditRecord) -> Value {
    let placed = place(r);
    let class = placed.activity.class();
    let (activity_id, activity_name) = placed.activity.id_and_name();
    let (status_id, status) = placed.status.id_and_name();
    let (severity_id, severity) = placed.severity.id_and_name();
    let d = &r.data;
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "sallyport",
            "uid": "sallyport",
            "vendor_name": "sallyport",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "uid": format!("{}:{}", r.source, r.seq),
        "original_time": rfc3339(r.time),
        "log_name": r.source,
        "event_code": r.kind,
    });
    if let Some(session) = s(d, "session") {
        metadata["correlation_uid"] = json!(session);
    }
    let mut e = json!({
        "category_uid": class.category_uid(),
        "category_name": class.category_name(),
        "class_uid": class.uid(),
        "class_name": class.name(),
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class.uid() * 100 + activity_id,
        "type_name": format!("{}: {activity_name}", class.name()),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "time": r.time,
        "message": message(r),
        "metadata": metadata,
        "unmapped": {
            "kind": r.kind,
            "source": r.source,
            "seq": r.seq,
            "hash": r.hash,
            "prev_hash": r.prev_hash,
            "data": r.data,
        },
    });
    if let Some(code) = s(d, "code") {
        e["status_code"] = json!(code);
    }
    if placed.status == Status::Failure
        && let Some(reason) = s(d, "reason").map(str::to_string).or_else(|| reasons(d))
    {
        e["status_detail"] = json!(reason);
    }
    let obj = match e.as_object_mut() {
        Some(o) => o,
        None => return e,
    };
    // Who, and where from and to, per class.
    let engineer = s(d, "engineer")
        .or_else(|| s(d, "engineer_invalid"))
        .or_else(|| s(d, "account"));
    let peer = s(d, "peer")
        .or_else(|| s(d, "source_ip"))
        .or_else(|| s(d, "by").and_then(|b| b.strip_prefix("unknown@")));
    match class {
        Class::SshActivity => {
            if let Some(p) = peer {
                obj.insert("src_endpoint".into(), endpoint_of_peer(p));
            }
            let dst = match (r.kind.as_str(), s(d, "target")) {
                ("forward" | "forward_failed" | "forward_refused", Some(t)) => Some(json!({
                    "name": t,
                    "hostname": t.rsplit_once(':').map_or(t, |(h, _)| h),
                })),
                _ => node_endpoint(d),
            };
            // The node when the event names one; otherwise the gateway or edge that wrote it.
            obj.insert(
                "dst_endpoint".into(),
                dst.unwrap_or_else(|| json!({"name": r.source, "svc_name": "ssh"})),
            );
            // SSH Activity names who acted through the host profile's `actor`.
            if let Some(who) = engineer {
                obj.insert("actor".into(), json!({"user": user(who)}));
                if let Some(m) = obj.get_mut("metadata") {
                    m["profiles"] = json!(["host"]);
                }
            }
            obj.insert("protocol_ver".into(), json!("2.0"));
            if r.kind == "session_started" || r.kind == "edge_session" {
                obj.insert("auth_type_id".into(), json!(1));
                obj.insert("auth_type".into(), json!("Certificate Based"));
            }
            if let Some(f) = file(r) {
                obj.insert("file".into(), f);
            }
        }
        Class::Authentication => {
            let who = engineer.or_else(|| s(d, "by").filter(|b| !b.starts_with("unknown@")));
            obj.insert("user".into(), user(who.unwrap_or("unknown")));
            if let Some(p) = peer {
                obj.insert("src_endpoint".into(), endpoint_of_peer(p));
            }
            let service = match Role::of(&r.source).map(|(role, _)| role) {
                Some(Role::Edge) => "sallyport edge",
                Some(Role::Gateway) => "sallyport gateway",
                Some(Role::Broker) | None => "sallyport broker",
            };
            obj.insert(
                "service".into(),
                json!({"name": service, "uid": s(d, "by").filter(|b| b.starts_with("edge:")).unwrap_or(&r.source)}),
            );
            if let Some(dst) = node_endpoint(d) {
                obj.insert("dst_endpoint".into(), dst);
            }
            // Logins and per-session codes are password (or token) plus TOTP.
            let mfa = matches!(
                r.kind.as_str(),
                "login_succeeded"
                    | "login_failed"
                    | "account_login_succeeded"
                    | "account_login_failed"
                    | "session_mfa_verified"
                    | "session_mfa_failed"
            );
            if mfa {
                obj.insert("is_mfa".into(), json!(true));
            }
            obj.insert("is_remote".into(), json!(true));
        }
        Class::AccountChange => {
            let target = s(d, "target")
                .or(engineer)
                .or_else(|| s(d, "principal"))
                .unwrap_or("unknown");
            obj.insert("user".into(), user(target));
            if let Some(p) = peer {
                obj.insert("src_endpoint".into(), endpoint_of_peer(p));
            }
            if let Some(by) = s(d, "by") {
                obj.insert("actor".into(), json!({"user": label_user(by)}));
            }
        }
        Class::ApiActivity => {
            let actor = match s(d, "by").or_else(|| s(d, "decided_by")) {
                Some(by) => label_user(by),
                None => match engineer {
                    Some(who) => user(who),
                    None => label_user(&r.source),
                },
            };
            obj.insert("actor".into(), json!({"user": actor}));
            let operation = match r.kind.as_str() {
                "admin_change" | "refused" => s(d, "action").unwrap_or(&r.kind).to_string(),
                other => other.to_string(),
            };
            obj.insert(
                "api".into(),
                json!({"operation": operation, "service": {"name": "sallyport broker"}}),
            );
            let src = match peer {
                Some(p) => endpoint_of_peer(p),
                None => match Role::of(&r.source) {
                    // A gateway's or an edge's own event: it is the endpoint.
                    Some((Role::Gateway | Role::Edge, _)) => json!({"name": r.source}),
                    Some((Role::Broker, _)) | None => json!({"name": "unknown"}),
                },
            };
            obj.insert("src_endpoint".into(), src);
        }
    }
    e
}

/// A certificate denial's reasons, as words.
fn reasons(d: &Value) -> Option<String> {
    let list = d.get("reasons")?.as_array()?;
    let words: Vec<String> = list
        .iter()
        .filter_map(|r| {
            r.get("message")
                .or_else(|| r.get("code"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    (!words.is_empty()).then(|| words.join("; "))
}

/// The file of a file transfer or an sftp/scp operation, with its SHA-256 when recorded.
fn file(r: &AuditRecord) -> Option<Value> {
    let (path, size, sha) = match r.kind.as_str() {
        "file_op" => {
            let op = r.data.get("op")?;
            let path = s(op, "path").or_else(|| s(op, "from"))?;
            let sha = s(op, "sha256")
                .or_else(|| s(op, "sha256_written"))
                .or_else(|| s(op, "sha256_read"));
            let size = op
                .get("bytes")
                .or_else(|| op.get("size"))
                .and_then(Value::as_u64)
                .or_else(|| {
                    let w = op.get("bytes_written").and_then(Value::as_u64)?;
                    let rd = op.get("bytes_read").and_then(Value::as_u64)?;
                    Some(w.max(rd))
                });
            (path, size, sha)
        }
        "file_transfer" => (s(r.data.get("transfer")?, "path")?, None, None),
        _ => return None,
    };
    let name = path.rsplit('/').find(|p| !p.is_empty()).unwrap_or(path);
    let mut f = json!({"name": name, "path": path, "type_id": 1, "type": "Regular File"});
    if let Some(n) = size {
        f["size"] = json!(n);
    }
    if let Some(h) = sha {
        f["hashes"] = json!([{"algorithm_id": 3, "algorithm": "SHA-256", "value": h}]);
    }
    Some(f)
}

/// One line a person can read.
fn message(r: &AuditRecord) -> String {
    let d = &r.data;
    let who = s(d, "engineer")
        .or_else(|| s(d, "by"))
        .or_else(|| s(d, "account"))
        .unwrap_or("someone");
    let on = match (s(d, "node"), s(d, "cluster")) {
        (Some(n), Some(c)) => format!(" on {n}.{c}"),
        (None, Some(c)) => format!(" on {c}"),
        (Some(n), None) => format!(" on {n}"),
        (None, None) => String::new(),
    };
    let what = r.kind.replace('_', " ");
    let detail = match r.kind.as_str() {
        "command" => s(d, "command").map(|c| format!(": {c}")),
        "file_op" | "file_transfer" => {
            file(r).and_then(|f| f["path"].as_str().map(|p| format!(": {p}")))
        }
        "channel_exit" => d
            .get("exit_status")
            .and_then(Value::as_u64)
            .map(|n| format!(": exit status {n}")),
        _ => s(d, "reason").map(|r| format!(": {r}")),
    }
    .unwrap_or_default();
    let mut m = format!("{what} by {who}{on}{detail}");
    if m.chars().count() > 512 {
        m = m.chars().take(511).collect::<String>() + "…";
    }
    m.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}
