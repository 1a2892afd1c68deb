//! Checks an event against the OCSF schema, from the schema's own definition files: those of
//! OCSF 1.8.0 that sallyport's classes use, vendored verbatim from
//! <https://github.com/ocsf/ocsf-schema> (tag `1.8.0`, commit
//! 6fa6499a0f8c9f449d342816e90e5f687c224b0a) under `tests/fixtures/ocsf/1.8.0/` with the
//! schema's LICENSE (Apache-2.0). Nothing here is written by hand from memory: the required
//! attributes, enums, types and constraints are read from those files.
//!
//! What is checked, for the event's class (base_event, then the category's base class, then the
//! class, each level refining the one before) and, recursively, for each object it holds:
//! - every attribute marked `"requirement": "required"` is present (not null);
//! - `at_least_one` / `just_one` constraints hold (those of the most specific level that has any);
//! - every attribute present is one the class (or object) defines;
//! - each value has the attribute's type (dictionary types reduced to their base types:
//!   string, integer, long, float, boolean; objects checked as objects; arrays as arrays);
//! - an attribute with an enum (the dictionary's, merged with each level's) holds one of its
//!   values;
//! - `category_uid` is a category of `categories.json`, `class_uid` is `category_uid * 1000 +`
//!   the class's `uid`, `type_uid` is `class_uid * 100 + activity_id`.
//!
//! A profile's attributes (`profiles/*.json`) count only when the event names the profile in
//! `metadata.profiles` and the class includes it (`$include`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

pub struct Schema {
    root: PathBuf,
    dictionary: Value,
    categories: Value,
}

#[derive(Debug, Clone, Default)]
struct Attr {
    requirement: String,
    ty: String,
    is_array: bool,
    /// Enum values as their keys ("0", "1", "99").
    enums: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Def {
    name: String,
    attrs: BTreeMap<String, Attr>,
    at_least_one: Vec<Vec<String>>,
    just_one: Vec<Vec<String>>,
    /// For classes: the category's name and the class's own uid.
    category: Option<String>,
    uid: Option<u64>,
}

/// The class files sallyport emits, by class_uid.
const CLASSES: [(u64, &str); 4] = [
    (4007, "events/network/ssh_activity.json"),
    (3002, "events/iam/authentication.json"),
    (3001, "events/iam/account_change.json"),
    (6003, "events/application/api_activity.json"),
];

impl Schema {
    pub fn load() -> Schema {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ocsf/1.8.0");
        let read = |p: &str| -> Value {
            serde_json::from_str(&std::fs::read_to_string(root.join(p)).unwrap()).unwrap()
        };
        Schema {
            dictionary: read("dictionary.json"),
            categories: read("categories.json"),
            root,
        }
    }

    pub fn version(&self) -> String {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(self.root.join("version.json")).unwrap())
                .unwrap();
        v["version"].as_str().unwrap().to_string()
    }

    fn read(&self, rel: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.root.join(rel)).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    /// Where the definition a file `extends` lives.
    fn parent_file(&self, name: &str, is_event: bool) -> String {
        if is_event {
            match name {
                "base_event" => "events/base_event.json".into(),
                "network" => "events/network/network.json".into(),
                "iam" => "events/iam/iam.json".into(),
                "application" => "events/application/application.json".into(),
                other => panic!("no vendored event class {other}: add it to the fixtures"),
            }
        } else {
            format!("objects/{name}.json")
        }
    }

    /// A definition with what it inherits: the chain of `extends`, most general first.
    fn def(&self, file: &str, is_event: bool) -> Result<Def, String> {
        self.def_with(file, is_event, &[])
    }

    /// [`Schema::def`] with the attributes of `profiles` the chain includes.
    fn def_with(&self, file: &str, is_event: bool, profiles: &[String]) -> Result<Def, String> {
        let mut chain = Vec::new();
        let mut next = Some(file.to_string());
        while let Some(f) = next {
            let v = self
                .read(&f)
                .ok_or_else(|| format!("{f} is not vendored under tests/fixtures/ocsf"))?;
            next = v["extends"].as_str().map(|p| self.parent_file(p, is_event));
            chain.push(v);
        }
        chain.reverse();
        let mut def = Def::default();
        for level in &chain {
            if let Some(n) = level["name"].as_str() {
                def.name = n.to_string();
            }
            if let Some(c) = level["category"].as_str() {
                def.category = Some(c.to_string());
            }
            if let Some(u) = level["uid"].as_u64() {
                def.uid = Some(u);
            }
            let mut levels = vec![level.clone()];
            for inc in level["attributes"]["$include"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let inc = inc.as_str().unwrap_or("");
                let named = inc
                    .strip_prefix("profiles/")
                    .and_then(|n| n.strip_suffix(".json"))
                    .is_some_and(|n| profiles.iter().any(|p| p == n));
                if named {
                    levels.push(self.read(inc).ok_or_else(|| {
                        format!("{inc} is not vendored under tests/fixtures/ocsf")
                    })?);
                }
            }
            for (name, a) in levels
                .iter()
                .flat_map(|l| l["attributes"].as_object().into_iter().flatten())
            {
                if name == "$include" {
                    continue;
                }
                let entry = def
                    .attrs
                    .entry(name.clone())
                    .or_insert_with(|| self.dictionary_attr(name));
                if let Some(r) = a["requirement"].as_str() {
                    entry.requirement = r.to_string();
                }
                if let Some(t) = a["type"].as_str() {
                    entry.ty = t.to_string();
                }
                for k in a["enum"].as_object().into_iter().flatten().map(|(k, _)| k) {
                    entry.enums.insert(k.clone());
                }
            }
            // A level's constraints replace those it inherits (an endpoint's `at_least_one` widens
            // the entity's, it does not add to it).
            if level["constraints"].is_object() {
                def.at_least_one.clear();
                def.just_one.clear();
            }
            for (kind, list) in level["constraints"].as_object().into_iter().flatten() {
                let names: Vec<String> = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect();
                match kind.as_str() {
                    "at_least_one" => def.at_least_one.push(names),
                    "just_one" => def.just_one.push(names),
                    _ => {}
                }
            }
        }
        Ok(def)
    }

    fn dictionary_attr(&self, name: &str) -> Attr {
        let d = &self.dictionary["attributes"][name];
        Attr {
            requirement: "optional".into(),
            ty: d["type"].as_str().unwrap_or("").to_string(),
            is_array: d["is_array"].as_bool().unwrap_or(false),
            enums: d["enum"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// A dictionary type reduced to its base type (`ip_t` → `string_t`, `timestamp_t` →
    /// `long_t`); an object's name stays as it is.
    fn base_type(&self, ty: &str) -> String {
        let mut t = ty.to_string();
        for _ in 0..4 {
            match self.dictionary["types"]["attributes"][&t]["type"].as_str() {
                Some(base) if base != t => t = base.to_string(),
                _ => break,
            }
        }
        t
    }

    /// Every problem of `e` against its class; empty when it validates.
    pub fn check_event(&self, e: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(class_uid) = e["class_uid"].as_u64() else {
            return vec!["class_uid is missing or not an integer".into()];
        };
        let Some((_, file)) = CLASSES.iter().find(|(u, _)| *u == class_uid) else {
            return vec![format!("class_uid {class_uid} is not a vendored class")];
        };
        let profiles: Vec<String> = e["metadata"]["profiles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        let mut def = match self.def_with(file, true, &profiles) {
            Ok(d) => d,
            Err(p) => return vec![p],
        };
        // The base event lists only 0 for these; a class's values come from its category and
        // its own uid, checked below.
        for n in ["category_uid", "class_uid"] {
            if let Some(a) = def.attrs.get_mut(n) {
                a.enums.clear();
            }
        }
        let category = def.category.clone().unwrap_or_default();
        let category_uid = self.categories["attributes"][&category]["uid"].as_u64();
        if category_uid.is_none() {
            problems.push(format!(
                "class {} has no category in categories.json",
                def.name
            ));
        }
        if e["category_uid"].as_u64() != category_uid {
            problems.push(format!(
                "category_uid {} is not {category_uid:?} ({category})",
                e["category_uid"]
            ));
        }
        let want_class = category_uid.unwrap_or(0) * 1000 + def.uid.unwrap_or(0);
        if class_uid != want_class {
            problems.push(format!(
                "class_uid {class_uid} is not {want_class} ({})",
                def.name
            ));
        }
        if let Some(a) = e["activity_id"].as_u64()
            && e["type_uid"].as_u64() != Some(class_uid * 100 + a)
        {
            problems.push(format!(
                "type_uid {} is not class_uid * 100 + activity_id = {}",
                e["type_uid"],
                class_uid * 100 + a
            ));
        }
        self.check_object_with(&def, "", e, &mut problems);
        problems
    }

    fn check_object_with(&self, def: &Def, path: &str, v: &Value, problems: &mut Vec<String>) {
        let Some(obj) = v.as_object() else {
            problems.push(format!("{path}: not an object ({})", def.name));
            return;
        };
        let at = |n: &str| {
            if path.is_empty() {
                n.to_string()
            } else {
                format!("{path}.{n}")
            }
        };
        for (name, a) in &def.attrs {
            if a.requirement == "required" && obj.get(name).is_none_or(Value::is_null) {
                problems.push(format!(
                    "{}: required by {} but missing",
                    at(name),
                    def.name
                ));
            }
        }
        for group in &def.at_least_one {
            if !group
                .iter()
                .any(|n| obj.get(n).is_some_and(|v| !v.is_null()))
            {
                problems.push(format!(
                    "{}: {} needs at least one of {group:?}",
                    if path.is_empty() { "(event)" } else { path },
                    def.name
                ));
            }
        }
        for group in &def.just_one {
            let n = group
                .iter()
                .filter(|n| obj.get(*n).is_some_and(|v| !v.is_null()))
                .count();
            if n != 1 {
                problems.push(format!(
                    "{path}: {} needs exactly one of {group:?}",
                    def.name
                ));
            }
        }
        for (name, value) in obj {
            let Some(a) = def.attrs.get(name) else {
                problems.push(format!("{}: not an attribute of {}", at(name), def.name));
                continue;
            };
            if value.is_null() {
                continue;
            }
            if a.is_array {
                match value.as_array() {
                    Some(items) => {
                        for (i, item) in items.iter().enumerate() {
                            self.check_value(&format!("{}[{i}]", at(name)), a, item, problems);
                        }
                    }
                    None => problems.push(format!("{}: must be an array", at(name))),
                }
            } else {
                self.check_value(&at(name), a, value, problems);
            }
        }
    }

    fn check_value(&self, path: &str, a: &Attr, v: &Value, problems: &mut Vec<String>) {
        let ty = self.base_type(&a.ty);
        let ok = match ty.as_str() {
            "string_t" => v.is_string(),
            "integer_t" | "long_t" => v.is_i64() || v.is_u64(),
            "float_t" => v.is_number(),
            "boolean_t" => v.is_boolean(),
            "json_t" => true,
            "object" => v.is_object(),
            "" => {
                problems.push(format!("{path}: the dictionary gives it no type"));
                return;
            }
            object => {
                match self.def(&format!("objects/{object}.json"), false) {
                    Ok(def) => self.check_object_with(&def, path, v, problems),
                    Err(p) => problems.push(format!("{path}: {p}")),
                }
                return;
            }
        };
        if !ok {
            problems.push(format!("{path}: {v} is not of type {}", a.ty));
            return;
        }
        if !a.enums.is_empty() && (ty == "integer_t" || ty == "long_t" || ty == "string_t") {
            let key = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !a.enums.contains(&key) {
                problems.push(format!(
                    "{path}: {v} is not one of the values the schema defines ({:?})",
                    a.enums
                ));
            }
        }
    }
}
