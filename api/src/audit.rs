//! Reading the audit log: search (`GET /v1/audit/events`), the chains and their signed heads
//! for verification (`GET /v1/audit/sources`, `/v1/audit/chain`, `/v1/audit/signatures`), and
//! the keys that sign them (`GET /v1/audit/keys`).

use sallyport_audit::{AuditRecord, SUBJECT_FIELDS};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::ErrorBody;

/// `GET /v1/audit/events`: each event flat (`kind`, `time`, `time_ms`, `source`, `seq`, `hash`,
/// the subject fields, then the event's own fields: as many as its kind has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvents {
    pub events: Vec<AuditEntry>,
    /// The cursor of the next page (`before`), when a newest-first page was full.
    pub next: Option<String>,
}

/// One event as search gives it (and the native stream, with its cursor): one flat JSON object,
/// the envelope typed and the event's own fields by name. The subject fields and `command` are
/// written as null when the event has none. Its fields are written in the order they were read
/// (as the broker writes them: the record's data as stored, then the subject fields it lacks,
/// then the envelope's it lacks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub kind: String,
    /// RFC 3339, to the millisecond.
    pub time: String,
    /// Unix milliseconds.
    pub time_ms: u64,
    pub source: String,
    pub seq: u64,
    pub hash: String,
    pub engineer: Option<String>,
    pub ticket: Option<String>,
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub session: Option<String>,
    pub command: Option<String>,
    /// The event's own fields (as many as its kind has), and a subject field a source wrote as
    /// something other than a string, as written.
    pub fields: Map<String, Value>,
    /// The names in the order they are written.
    order: Vec<String>,
}

/// The fields of an entry that may be null: the subject fields, then `command`.
const NULLABLE: [&str; 6] = [
    SUBJECT_FIELDS[0],
    SUBJECT_FIELDS[1],
    SUBJECT_FIELDS[2],
    SUBJECT_FIELDS[3],
    SUBJECT_FIELDS[4],
    "command",
];

/// The envelope's fields, in the order the broker adds them.
const ENVELOPE: [&str; 6] = ["kind", "time", "time_ms", "source", "seq", "hash"];

impl AuditEntry {
    /// A stored record as search gives it; `time` is its time as RFC 3339.
    pub fn of(r: &AuditRecord, time: String) -> AuditEntry {
        let data = match &r.data {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        let mut e = AuditEntry::envelope(
            (r.kind.clone(), time, r.time),
            (r.source.clone(), r.seq, r.hash.clone()),
            data,
        );
        // As written, and as read back.
        e.order = e.to_map().keys().cloned().collect();
        e
    }

    /// An entry of this envelope ((kind, time, time_ms), (source, seq, hash)) with the fields
    /// of `m` that are not the envelope's, in `m`'s order.
    fn envelope(
        (kind, time, time_ms): (String, String, u64),
        (source, seq, hash): (String, u64, String),
        m: Map<String, Value>,
    ) -> AuditEntry {
        let mut e = AuditEntry {
            kind,
            time,
            time_ms,
            source,
            seq,
            hash,
            engineer: None,
            ticket: None,
            cluster: None,
            node: None,
            session: None,
            command: None,
            fields: Map::new(),
            order: m.keys().cloned().collect(),
        };
        for (name, v) in m {
            if !ENVELOPE.contains(&name.as_str()) {
                e.put(name, v);
            }
        }
        e
    }

    /// A field read or kept: a subject field or `command` that is a string (or null) to its
    /// slot, anything else to `fields`.
    fn put(&mut self, name: String, v: Value) {
        let slot = match name.as_str() {
            "engineer" => &mut self.engineer,
            "ticket" => &mut self.ticket,
            "cluster" => &mut self.cluster,
            "node" => &mut self.node,
            "session" => &mut self.session,
            "command" => &mut self.command,
            _ => {
                self.fields.insert(name, v);
                return;
            }
        };
        match v {
            Value::String(s) => *slot = Some(s),
            Value::Null => {}
            other => {
                self.fields.insert(name, other);
            }
        }
    }

    /// The value written for `name`, if the entry has one.
    fn value_of(&self, name: &str) -> Option<Value> {
        let nullable = |slot: &Option<String>| match slot {
            Some(s) => Some(Value::String(s.clone())),
            None => Some(self.fields.get(name).cloned().unwrap_or(Value::Null)),
        };
        match name {
            "kind" => Some(Value::String(self.kind.clone())),
            "time" => Some(Value::String(self.time.clone())),
            "time_ms" => Some(self.time_ms.into()),
            "source" => Some(Value::String(self.source.clone())),
            "seq" => Some(self.seq.into()),
            "hash" => Some(Value::String(self.hash.clone())),
            "engineer" => nullable(&self.engineer),
            "ticket" => nullable(&self.ticket),
            "cluster" => nullable(&self.cluster),
            "node" => nullable(&self.node),
            "session" => nullable(&self.session),
            "command" => nullable(&self.command),
            _ => self.fields.get(name).cloned(),
        }
    }

    /// The entry as one JSON object (what is written): the names in the order read, then the
    /// own fields, the subject fields and the envelope not among them.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut out = Map::new();
        let names = self
            .order
            .iter()
            .map(String::as_str)
            .chain(self.fields.keys().map(String::as_str))
            .chain(NULLABLE)
            .chain(ENVELOPE);
        for name in names {
            if !out.contains_key(name)
                && let Some(v) = self.value_of(name)
            {
                out.insert(name.to_string(), v);
            }
        }
        out
    }

    /// An entry from one JSON object: the envelope must be there and of its kind.
    pub fn from_map(m: Map<String, Value>) -> Result<AuditEntry, serde_json::Error> {
        fn take<T: serde::de::DeserializeOwned>(
            m: &Map<String, Value>,
            name: &'static str,
        ) -> Result<T, serde_json::Error> {
            let v = m
                .get(name)
                .ok_or_else(|| serde_json::Error::missing_field(name))?;
            T::deserialize(v).map_err(|e| serde_json::Error::custom(format!("field {name}: {e}")))
        }
        let kind = (take(&m, "kind")?, take(&m, "time")?, take(&m, "time_ms")?);
        let chain = (take(&m, "source")?, take(&m, "seq")?, take(&m, "hash")?);
        Ok(AuditEntry::envelope(kind, chain, m))
    }

    /// One of the event's own fields (or a subject field written as something else than a
    /// string), by name.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }
}

impl Serialize for AuditEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(s)
    }
}

impl<'de> Deserialize<'de> for AuditEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AuditEntry, D::Error> {
        AuditEntry::from_map(Map::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// A line of `GET /v1/audit/stream?format=native`: the event as search gives it, with the
/// cursor to resume after it (`cursor`, among the event's fields in name order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub cursor: String,
    pub event: AuditEntry,
}

impl Serialize for StreamEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = self.event.to_map();
        m.insert("cursor".into(), Value::String(self.cursor.clone()));
        m.serialize(s)
    }
}

impl<'de> Deserialize<'de> for StreamEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StreamEvent, D::Error> {
        let mut cursor = None;
        let mut rest = Map::new();
        for (name, v) in Map::deserialize(d)? {
            if name == "cursor" {
                cursor = Some(v);
            } else {
                rest.insert(name, v);
            }
        }
        let cursor = match cursor {
            Some(Value::String(c)) => c,
            Some(_) => return Err(D::Error::custom("field cursor: not a string")),
            None => return Err(D::Error::missing_field("cursor")),
        };
        let event = AuditEntry::from_map(rest).map_err(D::Error::custom)?;
        Ok(StreamEvent { cursor, event })
    }
}

/// What a client reads of a line of `GET /v1/audit/stream?format=ocsf`: the cursor at
/// `unmapped.cursor` (the rest is the OCSF event, read by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OcsfLine {
    pub unmapped: OcsfUnmapped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OcsfUnmapped {
    pub cursor: String,
}

/// A line of `GET /v1/audit/stream` as a client reads it: the broker's last line when it ended
/// the stream (the API's error body), or an event and the cursor to resume after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamLine {
    Ended(ErrorBody),
    Native(Box<StreamEvent>),
    Ocsf(OcsfLine),
}

impl StreamLine {
    /// Read one line of the stream in `ocsf` or native format.
    pub fn read(text: &str, ocsf: bool) -> Result<StreamLine, serde_json::Error> {
        let v: Value = serde_json::from_str(text)?;
        if v.get("error").is_some() {
            return serde_json::from_value(v).map(StreamLine::Ended);
        }
        if ocsf {
            serde_json::from_value(v).map(StreamLine::Ocsf)
        } else {
            serde_json::from_value(v).map(|e| StreamLine::Native(Box::new(e)))
        }
    }

    /// The cursor to resume after this line (none for the last line of an ended stream).
    pub fn cursor(&self) -> Option<&str> {
        match self {
            StreamLine::Ended(_) => None,
            StreamLine::Native(e) => Some(&e.cursor),
            StreamLine::Ocsf(o) => Some(&o.unmapped.cursor),
        }
    }
}

/// `GET /v1/audit/key` (no authentication): the key that signs the broker's chain and every
/// bundle's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerAuditKey {
    /// Always `broker`.
    pub source: String,
    /// OpenSSH line, without comment.
    pub public_key: String,
    pub fingerprint: String,
}

/// How far a source says its chain goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub source: String,
    pub reported: u64,
    /// Unix seconds.
    pub reported_at: u64,
}

/// `GET /v1/audit/sources`: the chains stored, and the heads their sources reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSources {
    pub sources: Vec<String>,
    pub heads: Vec<AuditHead>,
}

/// `GET /v1/audit/chain`: a page of one chain, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditChain {
    pub records: Vec<AuditRecord>,
}

/// A signed head of a chain: record `seq` had `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadSignature {
    pub seq: u64,
    pub hash: String,
    pub signature: String,
}

/// `GET /v1/audit/signatures`: a page of one chain's signed heads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSignatures {
    pub source: String,
    pub signatures: Vec<HeadSignature>,
}

/// A key that signs a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKey {
    pub source: String,
    /// OpenSSH line.
    pub public_key: String,
    pub fingerprint: String,
    /// Unix seconds; none for the broker's own key (it lives in its data_dir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<u64>,
    pub pinned_by: String,
}

/// `GET /v1/audit/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKeys {
    pub keys: Vec<AuditKey>,
}

/// `POST /v1/audit/unseal`: open a line a gateway sealed (an `input_hidden` event, named by its
/// chain and place in it). Reviewers only; the reason is kept in a `hidden_input_opened` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsealRequest {
    pub source: String,
    pub seq: u64,
    pub reason: String,
}

/// What an opened `input_hidden` line held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsealed {
    pub source: String,
    pub seq: u64,
    pub session: String,
    /// The line's number in its channel (as in the session's other events).
    pub line: u64,
    /// What was typed at the prompt (a password, or a command typed at a shell whose prompt
    /// read like a password prompt).
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn audit_bodies_round_trip() {
        let v = json!({"keys": [
            {"source": "broker", "public_key": "ssh-ed25519 A", "fingerprint": "SHA256:x",
             "pinned_by": "data_dir"},
            {"source": "gateway:g", "public_key": "ssh-ed25519 B", "fingerprint": "SHA256:y",
             "pinned_at": 5, "pinned_by": "enrollment"}]});
        let k: AuditKeys = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&k).unwrap(), v);
        let v = json!({"events": [entry()], "next": null});
        let e: AuditEvents = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&e).unwrap(), v);
        assert_eq!(e.events[0].engineer.as_deref(), Some("alice"));
        assert_eq!(e.events[0].node, None);
        assert_eq!(e.events[0].field("reasons"), Some(&json!([{"code": "c"}])));
    }

    fn entry() -> Value {
        json!({"kind": "certificate_denied", "time": "2026-01-01T00:00:00.005Z", "time_ms": 5,
               "source": "broker", "seq": 2, "hash": "h", "engineer": "alice", "ticket": "T-1",
               "cluster": "c", "node": null, "session": null, "command": null,
               "reasons": [{"code": "c"}]})
    }

    /// What the broker wrote before the entry was typed: the record's data, the subject
    /// fields and `command` null when absent, then the envelope over it.
    fn flat(r: &AuditRecord, time: &str) -> Map<String, Value> {
        let mut out = r.data.as_object().cloned().unwrap_or_default();
        for f in NULLABLE {
            out.entry(f.to_string()).or_insert(Value::Null);
        }
        out.insert("kind".into(), json!(r.kind));
        out.insert("time".into(), json!(time));
        out.insert("time_ms".into(), json!(r.time));
        out.insert("source".into(), json!(r.source));
        out.insert("seq".into(), json!(r.seq));
        out.insert("hash".into(), json!(r.hash));
        out
    }

    #[test]
    fn an_entry_is_written_as_the_flat_event_byte_for_byte() {
        for data in [
            json!({"engineer": "alice", "ticket": "T-1", "command": "ls", "exit": 0}),
            json!({"node": 7, "session": null, "kind": "forged", "seq": "x", "zeta": [1]}),
            json!({}),
            json!("not an object"),
        ] {
            let r = AuditRecord::next("gateway:g", Some((4, "p")), 9, "command", data);
            let time = "1970-01-01T00:00:00.009Z";
            let e = AuditEntry::of(&r, time.into());
            let written = serde_json::to_string(&e).unwrap();
            assert_eq!(written, Value::Object(flat(&r, time)).to_string());
            let back: AuditEntry = serde_json::from_str(&written).unwrap();
            assert_eq!(back, e);
            let line = StreamEvent {
                cursor: "gateway:g:5".into(),
                event: e.clone(),
            };
            let mut v = Value::Object(flat(&r, time));
            v["cursor"] = json!("gateway:g:5");
            let text = serde_json::to_string(&line).unwrap();
            assert_eq!(text, v.to_string());
            let read = StreamLine::read(&text, false).unwrap();
            assert_eq!(read.cursor(), Some("gateway:g:5"));
            assert_eq!(read, StreamLine::Native(Box::new(line)));
        }
        let e = AuditEntry::of(
            &AuditRecord::next("edge:e", None, 1, "x", json!({"node": 7})),
            "t".into(),
        );
        assert_eq!((&e.node, e.field("node")), (&None, Some(&json!(7))));
        assert!(serde_json::from_value::<AuditEntry>(json!({"kind": "x"})).is_err());
    }

    #[test]
    fn a_stream_line_is_an_event_with_its_cursor_or_the_last_error() {
        let ended = StreamLine::read(r#"{"error":{"code":"unauthorized","message":"m"}}"#, false);
        assert_eq!(
            ended.unwrap(),
            StreamLine::Ended(ErrorBody::new("unauthorized", "m"))
        );
        let ocsf = StreamLine::read(
            r#"{"class_uid":4007,"unmapped":{"cursor":"broker:3"}}"#,
            true,
        )
        .unwrap();
        assert_eq!(ocsf.cursor(), Some("broker:3"));
        assert!(StreamLine::read(r#"{"class_uid":4007}"#, true).is_err());
        assert!(StreamLine::read(r#"{"kind":"x"}"#, false).is_err());
    }
}
