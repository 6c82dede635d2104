//! Line and column of a field in the config text.
//!
//! serde_yaml_ng has no spanned values, but it does attach the position of the
//! node being deserialized to any error a `Deserialize` impl raises there. So to
//! find where a field is, we deserialize the text once more with a tiny visitor
//! that walks down the field path, skipping everything else, and fails on purpose
//! at the wanted node; the error's `location()` is that node's position.
//!
//! Why this and not a second YAML parser or a line scanner: the position comes
//! from the very parser that produced the values, so the two can never disagree
//! (flow style, quoting, anchors and comments included), and it adds no
//! dependency. It costs one extra parse, and only when an error is reported.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::node::{FieldPath, Seg, Target};

/// The message of the deliberate error; it cannot come from a real document.
const FOUND: &str = "\u{0}subvault: position probe reached its node";

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// Line, counting from 1.
    pub line: usize,
    /// Column, counting from 1.
    pub column: usize,
}

/// The position of the key or value at `path`, or of its nearest ancestor that is
/// in the text (a missing key points at the mapping that lacks it). The document
/// start when nothing matches.
pub(crate) fn locate(text: &str, path: &FieldPath, target: Target) -> Position {
    let segs = path.segments();
    if let Some(pos) = probe(text, segs, target) {
        return pos;
    }
    for len in (0..segs.len()).rev() {
        // An ancestor mapping entry: point at its key, which is where a reader looks.
        let target = if matches!(segs[..len].last(), Some(Seg::Key(_))) {
            Target::Key
        } else {
            Target::Value
        };
        if let Some(pos) = probe(text, &segs[..len], target) {
            return pos;
        }
    }
    Position { line: 1, column: 1 }
}

/// Walk to `segs` and report the position, `None` when the path is not in the text.
fn probe(text: &str, segs: &[Seg], target: Target) -> Option<Position> {
    let walk = Walk { rest: segs, target };
    match walk.deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| Position {
            line: l.line(),
            column: l.column(),
        }),
        _ => None,
    }
}

/// Descends along `rest`; fails with [`FOUND`] at the end of the path.
struct Walk<'p> {
    rest: &'p [Seg],
    target: Target,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walk<'_> {
    /// A scalar: the end of the walk if the path ends here, else a dead end.
    fn leaf<E: de::Error>(self) -> Result<(), E> {
        if self.rest.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        // A tagged value (`!tag x`): nothing inside it is part of our schema.
        self.leaf()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.rest.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Index(wanted) = first else {
            return Ok(());
        };
        for _ in 0..*wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Walk {
            rest,
            target: self.target,
        })?;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.rest.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Key(wanted) = first else {
            return Ok(());
        };
        let stop_at_key = rest.is_empty() && self.target == Target::Key;
        while let Some(matched) = map.next_key_seed(KeyProbe {
            wanted,
            stop_here: stop_at_key,
        })? {
            if matched {
                return map.next_value_seed(Walk {
                    rest,
                    target: self.target,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Deserializes a mapping key: `true` when it is the wanted one, or the deliberate
/// error when the walk ends at this key.
struct KeyProbe<'p> {
    wanted: &'p str,
    stop_here: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if key != self.wanted {
            Ok(false)
        } else if self.stop_here {
            Err(E::custom(FOUND))
        } else {
            Ok(true)
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

/// The first key that appears twice in one mapping, with the position of its
/// second occurrence. serde_yaml_ng rejects such documents but points at the
/// mapping, not at the repeated key, which is what the user has to delete.
pub(crate) fn duplicate_key(text: &str) -> Option<(FieldPath, Position)> {
    let found = RefCell::new(None);
    let walk = DupWalk {
        path: FieldPath::default(),
        found: &found,
    };
    match walk.deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => {
            let loc = e.location()?;
            let path = found.into_inner()?;
            Some((
                path,
                Position {
                    line: loc.line(),
                    column: loc.column(),
                },
            ))
        }
        _ => None,
    }
}

/// Walks the whole document looking for a repeated mapping key.
struct DupWalk<'f> {
    path: FieldPath,
    found: &'f RefCell<Option<FieldPath>>,
}

impl<'de> DeserializeSeed<'de> for DupWalk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DupWalk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(DupWalk {
                path: self.path.index(i),
                found: self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key_seed(DupKey {
            seen: &mut seen,
            path: &self.path,
            found: self.found,
        })? {
            let path = match key {
                Some(k) => self.path.key(&k),
                None => self.path.clone(),
            };
            map.next_value_seed(DupWalk {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }
}

/// A mapping key: its text (`None` for a non-string key), or the deliberate
/// error when it was seen before in the same mapping.
struct DupKey<'s> {
    seen: &'s mut HashSet<String>,
    path: &'s FieldPath,
    found: &'s RefCell<Option<FieldPath>>,
}

impl<'de> DeserializeSeed<'de> for DupKey<'_> {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DupKey<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<String>, E> {
        if self.seen.insert(key.to_string()) {
            return Ok(Some(key.to_string()));
        }
        *self.found.borrow_mut() = Some(self.path.key(key));
        Err(E::custom(FOUND))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<String>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
a: 1
b:
  - x: [10, 20]
    y: {p: q, r: s}
  - x: hello
c:
";

    fn at(path: FieldPath, target: Target) -> (usize, usize) {
        let p = locate(DOC, &path, target);
        (p.line, p.column)
    }

    #[test]
    fn finds_keys_values_and_elements() {
        let root = FieldPath::default();
        assert_eq!(at(root.key("a"), Target::Value), (1, 4));
        assert_eq!(at(root.key("a"), Target::Key), (1, 1));
        assert_eq!(at(root.key("b").index(1).key("x"), Target::Value), (5, 8));
        assert_eq!(
            at(root.key("b").index(0).key("x").index(1), Target::Value),
            (3, 13)
        );
        assert_eq!(
            at(root.key("b").index(0).key("y").key("r"), Target::Key),
            (4, 15)
        );
        assert_eq!(at(root.key("c"), Target::Key), (6, 1));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let root = FieldPath::default();
        // `b[0].z` does not exist: point at the key of its nearest present ancestor... which
        // is the list element b[0] (a mapping starting at `x`).
        assert_eq!(at(root.key("b").index(0).key("z"), Target::Value), (3, 5));
        assert_eq!(at(root.key("nope"), Target::Value), (1, 1));
    }

    #[test]
    fn finds_the_second_occurrence_of_a_repeated_key() {
        let text = "a: 1\nb:\n  - {x: 1, y: 2}\n  - x: 1\n    y: 2\n    x: 3\n";
        let (path, pos) = duplicate_key(text).expect("a duplicate");
        assert_eq!(path.to_string(), "b[1].x");
        assert_eq!((pos.line, pos.column), (6, 5));
        assert!(duplicate_key(DOC).is_none());
    }
}
