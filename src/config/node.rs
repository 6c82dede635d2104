//! Typed reading of a parsed YAML tree that remembers where each value sits.
//!
//! Every [`Node`] carries its field path (`sources[0].upload_to_remotes[1].preserve`),
//! so any check, structural or semantic, can produce a [`Fault`] naming the field.
//! A fault holds no line and column: those are looked up afterwards, only when an
//! error is actually reported (see `locate`).

use std::fmt;

use serde_yaml_ng::{Mapping, Value};

/// One step in a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// The path of a value in the config document, e.g. `remotes[0].s3.bucket`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    /// The path one key deeper.
    pub(crate) fn key(&self, key: &str) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        FieldPath(segs)
    }

    /// The path one list element deeper.
    pub(crate) fn index(&self, i: usize) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        FieldPath(segs)
    }

    /// The steps from the document root.
    pub(crate) fn segments(&self) -> &[Seg] {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Which part of a mapping entry an error points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The key (`preserve:`), for unknown keys and empty values.
    Key,
    /// The value (`1y 3m`).
    Value,
}

/// A config error before it is given a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    /// The field the message is about (may not exist in the file, e.g. a missing key).
    pub field: FieldPath,
    /// The node whose position the error reports; the nearest existing ancestor is
    /// used when it is not in the file.
    pub at: FieldPath,
    /// Key or value of `at`.
    pub target: Target,
    /// What is wrong and how to fix it. Never contains a secret value.
    pub message: String,
}

/// A value in the document together with its field path.
#[derive(Debug, Clone)]
pub(crate) struct Node<'v> {
    value: &'v Value,
    path: FieldPath,
}

/// What a YAML value is, in words, for "expected X, found Y" messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl<'v> Node<'v> {
    /// The document root.
    pub(crate) fn root(value: &'v Value) -> Node<'v> {
        Node {
            value,
            path: FieldPath::default(),
        }
    }

    /// The field path of this value.
    pub(crate) fn path(&self) -> &FieldPath {
        &self.path
    }

    /// The raw YAML value.
    pub(crate) fn value(&self) -> &'v Value {
        self.value
    }

    /// An error about this value. An empty value has no position of its own worth
    /// showing, so the error then points at its key.
    pub(crate) fn fault(&self, message: impl Into<String>) -> Fault {
        Fault {
            field: self.path.clone(),
            at: self.path.clone(),
            target: self.target(),
            message: message.into(),
        }
    }

    /// Where errors about this value point: the value itself, or its key when
    /// the value is empty.
    fn target(&self) -> Target {
        let ends_in_key = matches!(self.path.segments().last(), Some(Seg::Key(_)));
        if self.value.is_null() && ends_in_key {
            Target::Key
        } else {
            Target::Value
        }
    }

    /// A "wrong type" error.
    pub(crate) fn expected(&self, what: &str) -> Fault {
        self.fault(format!("expected {what}, found {}", kind_of(self.value)))
    }

    /// The value as a string.
    pub(crate) fn str(&self) -> Result<&'v str, Fault> {
        match self.value {
            Value::String(s) => Ok(s),
            _ => Err(self.expected("a string")),
        }
    }

    /// The value as a non-empty string.
    pub(crate) fn non_empty_str(&self) -> Result<&'v str, Fault> {
        let s = self.str()?;
        if s.trim().is_empty() {
            return Err(self.fault("must not be empty"));
        }
        Ok(s)
    }

    /// The value as a boolean (`true` / `false`).
    pub(crate) fn bool(&self) -> Result<bool, Fault> {
        match self.value {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.expected("true or false")),
        }
    }

    /// The value as an integer.
    pub(crate) fn int(&self) -> Result<i64, Fault> {
        match self.value {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
        .ok_or_else(|| self.expected("an integer"))
    }

    /// The elements of a list.
    pub(crate) fn seq(&self) -> Result<Vec<Node<'v>>, Fault> {
        match self.value {
            Value::Sequence(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, value)| Node {
                    value,
                    path: self.path.index(i),
                })
                .collect()),
            _ => Err(self.expected("a list")),
        }
    }

    /// The elements of a list that must have at least one.
    pub(crate) fn non_empty_seq(&self) -> Result<Vec<Node<'v>>, Fault> {
        let items = self.seq()?;
        if items.is_empty() {
            return Err(self.fault("must list at least one entry"));
        }
        Ok(items)
    }

    /// The value as a mapping whose keys must all be in `known`; an unknown key is
    /// an error naming it and the closest known key.
    pub(crate) fn map(&self, known: &[&str]) -> Result<MapNode<'v>, Fault> {
        let Value::Mapping(map) = self.value else {
            return Err(self.expected("a mapping"));
        };
        for key in map.keys() {
            let Value::String(name) = key else {
                return Err(self.fault(format!("keys must be strings, found {}", kind_of(key))));
            };
            if !known.contains(&name.as_str()) {
                let path = self.path.key(name);
                let hint = match closest(name, known.iter().copied()) {
                    Some(near) => format!(" (did you mean {near:?}?)"),
                    None => String::new(),
                };
                return Err(Fault {
                    field: path.clone(),
                    at: path,
                    target: Target::Key,
                    message: format!(
                        "unknown key {name:?}{hint}; allowed here: {}",
                        known.join(", ")
                    ),
                });
            }
        }
        Ok(MapNode {
            node: self.clone(),
            map,
        })
    }
}

/// A mapping whose keys have been checked against the allowed ones.
#[derive(Debug, Clone)]
pub(crate) struct MapNode<'v> {
    node: Node<'v>,
    map: &'v Mapping,
}

impl<'v> MapNode<'v> {
    /// The mapping as a node (for errors about the whole mapping).
    pub(crate) fn node(&self) -> &Node<'v> {
        &self.node
    }

    /// An optional field. An explicit empty value (`endpoint:` with everything
    /// below it commented out) counts as absent.
    pub(crate) fn get(&self, key: &str) -> Option<Node<'v>> {
        self.map
            .get(key)
            .filter(|v| !v.is_null())
            .map(|value| Node {
                value,
                path: self.node.path.key(key),
            })
    }

    /// Whether the key is present (even with an empty value).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some()
    }

    /// A required field: missing or empty is an error naming it.
    pub(crate) fn required(&self, key: &str) -> Result<Node<'v>, Fault> {
        if let Some(node) = self.get(key) {
            return Ok(node);
        }
        let field = self.node.path.key(key);
        Err(if self.has(key) {
            Fault {
                at: field.clone(),
                field,
                target: Target::Key,
                message: "needs a value".to_string(),
            }
        } else {
            Fault {
                field,
                at: self.node.path.clone(),
                target: self.node.target(),
                message: format!("missing required key {key:?}"),
            }
        })
    }
}

/// Edit distance between two short strings (for "did you mean" hints).
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev_diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev_diag + cost);
            prev_diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_lowercase();
    candidates
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_display() {
        let p = FieldPath::default().key("sources").index(0).key("preserve");
        assert_eq!(p.to_string(), "sources[0].preserve");
        assert_eq!(FieldPath::default().to_string(), "(top level)");
    }

    #[test]
    fn closest_suggests_typos_only() {
        let known = ["bucket", "prefix", "endpoint"];
        assert_eq!(closest("bukcet", known.iter().copied()), Some("bucket"));
        assert_eq!(closest("endpoint_url", known.iter().copied()), None);
        assert_eq!(closest("Prefix", known.iter().copied()), Some("prefix"));
    }
}
