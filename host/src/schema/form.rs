//! `application/x-www-form-urlencoded` bodies with bracket nesting, as Antavo's Events API
//! takes them (`data[items][0][price]=200`), turned into the JSON the rest of Tally speaks.
//!
//! Rules (those of PHP and Rails, which is where senders learnt them, made strict where
//! they are ambiguous):
//! - pairs are split on `&`, then on the first `=`; `+` is a space and `%XX` is a byte, and
//!   the decoded bytes must be UTF-8;
//! - a key is a name followed by `[segment]` groups; a segment of digits (`0`, `12`) is a list
//!   index, an empty one (`[]`) appends to a list, anything else is an object key;
//! - list indexes must count up from 0 without gaps (in any order) and stay below
//!   [`MAX_INDEX`], so `a[1000000]=x` cannot make the host build a huge array;
//! - a field given twice, or given both as a value and as a group (`a=1&a[b]=2`), or a
//!   group that mixes numbered and named entries, is refused rather than guessed at;
//! - every value is a string: a form has no types (the built-in event types accept numbers
//!   written as strings for this reason).
//!
//! The same key syntax names nested columns of a CSV import, so the nesting code lives here
//! and is shared with [`super::csv_import`].

use super::SchemaError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The largest list index accepted in a form key or CSV column name.
pub const MAX_INDEX: usize = 9_999;

/// The deepest nesting accepted (`a[b][c]` has depth 3).
pub const MAX_DEPTH: usize = 32;

/// Turns a form-encoded body into a JSON object.
///
/// ```
/// # use tally_host::schema::form_to_json;
/// let v = form_to_json("customer=42&data%5Bitems%5D%5B0%5D%5Bprice%5D=200").unwrap();
/// assert_eq!(v, serde_json::json!({"customer": "42", "data": {"items": [{"price": "200"}]}}));
/// ```
///
/// # Errors
/// [`SchemaError::InvalidForm`] naming the field: a malformed key, text that is not UTF-8,
/// a field given twice, conflicting shapes, a gap in list indexes, an index over
/// [`MAX_INDEX`] or nesting deeper than [`MAX_DEPTH`].
pub fn form_to_json(body: &str) -> Result<Value, SchemaError> {
    let mut root = Tree::default();
    for pair in body.trim().split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(raw_key).map_err(|e| SchemaError::form(format!("a field name {e}")))?;
        let value = decode(raw_value)
            .map_err(|e| SchemaError::form(format!("the value of field `{key}` {e}")))?;
        let path = parse_key(&key).map_err(SchemaError::form)?;
        root.insert(&path, value).map_err(SchemaError::form)?;
    }
    root.into_value().map_err(SchemaError::form)
}

/// Percent-decodes one form component, `+` being a space.
fn decode(raw: &str) -> Result<String, &'static str> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| "is not valid UTF-8 once percent-decoded")
}

/// One step of a nested key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Name(String),
    Index(usize),
    /// `[]`: the next element of a list.
    Push,
}

/// Splits `data[items][0][price]` into its segments. The first segment is always a name:
/// the top level is an object.
pub(crate) fn parse_key(key: &str) -> Result<Vec<Segment>, String> {
    let (head, mut rest) = match key.find('[') {
        Some(at) => key.split_at(at),
        None => (key, ""),
    };
    if head.is_empty() {
        return Err(format!(
            "field name `{key}` is empty before its first `[`: a field needs a name"
        ));
    }
    if head.contains(']') {
        return Err(format!("field name `{key}` has a `]` without a `[`"));
    }
    let mut segments = vec![Segment::Name(head.to_owned())];
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('[') else {
            return Err(format!(
                "field name `{key}` has text after a `]`: only `[...]` groups may follow the name"
            ));
        };
        let Some(close) = inner.find(']') else {
            return Err(format!("field name `{key}` has a `[` that is never closed"));
        };
        let segment = &inner[..close];
        if segment.contains('[') {
            return Err(format!(
                "field name `{key}` has a `[` inside a `[...]` group"
            ));
        }
        segments.push(segment_of(key, segment)?);
        if segments.len() > MAX_DEPTH {
            return Err(format!(
                "field name `{key}` nests deeper than {MAX_DEPTH} levels"
            ));
        }
        rest = &inner[close + 1..];
    }
    Ok(segments)
}

fn segment_of(key: &str, segment: &str) -> Result<Segment, String> {
    if segment.is_empty() {
        return Ok(Segment::Push);
    }
    // Only canonical numbers are indexes: `01` is a name, as it would not round-trip.
    let canonical = segment.bytes().all(|b| b.is_ascii_digit())
        && (segment == "0" || !segment.starts_with('0'));
    if !canonical {
        return Ok(Segment::Name(segment.to_owned()));
    }
    match segment.parse::<usize>() {
        Ok(index) if index <= MAX_INDEX => Ok(Segment::Index(index)),
        _ => Err(format!(
            "field `{key}` uses list index [{segment}], more than the largest allowed ({MAX_INDEX})"
        )),
    }
}

/// A form being assembled: lists are kept as index maps until the end, when they must be
/// dense.
#[derive(Debug)]
enum Node {
    Leaf(String),
    Object(Tree),
    List(BTreeMap<usize, Node>),
}

/// The fields of one object, named.
#[derive(Debug, Default)]
pub(crate) struct Tree(BTreeMap<String, Node>);

impl Tree {
    /// Puts `value` at `path` (whose first segment is a name).
    pub(crate) fn insert(&mut self, path: &[Segment], value: String) -> Result<(), String> {
        let Some((Segment::Name(first), rest)) = path.split_first() else {
            return Err("a field needs a name".to_owned());
        };
        let name = first.clone();
        if rest.is_empty() {
            if self.0.contains_key(&name) {
                return Err(twice_or_conflict(&name, self.0.get(&name)));
            }
            self.0.insert(name, Node::Leaf(value));
            return Ok(());
        }
        let slot = self
            .0
            .entry(name.clone())
            .or_insert_with(|| empty_for(&rest[0]));
        insert_into(slot, &name, rest, value)
    }

    /// The finished JSON object.
    pub(crate) fn into_value(self) -> Result<Value, String> {
        self.into_object("").map(Value::Object)
    }

    fn into_object(self, prefix: &str) -> Result<Map<String, Value>, String> {
        let mut map = Map::new();
        for (name, node) in self.0 {
            let here = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}[{name}]")
            };
            map.insert(name, node.into_value(&here)?);
        }
        Ok(map)
    }
}

impl Node {
    fn into_value(self, here: &str) -> Result<Value, String> {
        match self {
            Node::Leaf(s) => Ok(Value::String(s)),
            Node::Object(tree) => tree.into_object(here).map(Value::Object),
            Node::List(entries) => {
                let mut list = Vec::with_capacity(entries.len());
                for (expected, (index, node)) in entries.into_iter().enumerate() {
                    if index != expected {
                        return Err(format!(
                            "`{here}` has an entry [{index}] but no [{expected}]: list indexes must count up from 0 without gaps"
                        ));
                    }
                    list.push(node.into_value(&format!("{here}[{index}]"))?);
                }
                Ok(Value::Array(list))
            }
        }
    }
}

fn empty_for(next: &Segment) -> Node {
    match next {
        Segment::Name(_) => Node::Object(Tree::default()),
        Segment::Index(_) | Segment::Push => Node::List(BTreeMap::new()),
    }
}

fn twice_or_conflict(here: &str, existing: Option<&Node>) -> String {
    match existing {
        Some(Node::Leaf(_)) => format!(
            "field `{here}` is given twice (to send a list, use `{here}[]` or `{here}[0]`, `{here}[1]`, ...)"
        ),
        _ => format!("field `{here}` is given both as a value and as a group of fields"),
    }
}

/// Inserts below `node` (which lives at `here`) along the non-empty `path`.
fn insert_into(node: &mut Node, here: &str, path: &[Segment], value: String) -> Result<(), String> {
    let Some((segment, rest)) = path.split_first() else {
        return Err(format!("field `{here}` has an empty path"));
    };
    match (node, segment) {
        (Node::Leaf(_), _) => Err(format!(
            "field `{here}` is given both as a value and as a group of fields"
        )),
        (Node::Object(tree), Segment::Name(name)) => {
            let below = format!("{here}[{name}]");
            if rest.is_empty() {
                if tree.0.contains_key(name) {
                    return Err(twice_or_conflict(&below, tree.0.get(name)));
                }
                tree.0.insert(name.clone(), Node::Leaf(value));
                return Ok(());
            }
            let slot = tree
                .0
                .entry(name.clone())
                .or_insert_with(|| empty_for(&rest[0]));
            insert_into(slot, &below, rest, value)
        }
        (Node::List(entries), Segment::Index(_) | Segment::Push) => {
            let index = match segment {
                Segment::Index(i) => *i,
                _ => entries.keys().next_back().map_or(0, |last| last + 1),
            };
            if index > MAX_INDEX {
                return Err(format!("`{here}` has more than {} entries", MAX_INDEX + 1));
            }
            let below = format!("{here}[{index}]");
            if rest.is_empty() {
                if entries.contains_key(&index) {
                    return Err(twice_or_conflict(&below, entries.get(&index)));
                }
                entries.insert(index, Node::Leaf(value));
                return Ok(());
            }
            let slot = entries.entry(index).or_insert_with(|| empty_for(&rest[0]));
            insert_into(slot, &below, rest, value)
        }
        (Node::Object(_), _) | (Node::List(_), Segment::Name(_)) => Err(format!(
            "`{here}` mixes numbered entries ([0], []) with named ones: a group is either a list or an object"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: &str) -> String {
        let e = form_to_json(body).unwrap_err();
        assert_eq!(e.code(), "invalid_form");
        e.to_string()
    }

    #[test]
    fn flat_fields_obeyed() {
        assert_eq!(
            form_to_json("customer=374397439743&action=checkout").unwrap(),
            json!({"customer": "374397439743", "action": "checkout"})
        );
    }

    #[test]
    fn plus_and_percent_decoding_obeyed() {
        assert_eq!(
            form_to_json(
                "name=Yellow+T-Shirt&url=https%3A%2F%2Fexample.com%2Fa&p=1%2B1&e=caf%C3%A9"
            )
            .unwrap(),
            json!({"name": "Yellow T-Shirt", "url": "https://example.com/a", "p": "1+1", "e": "café"})
        );
    }

    #[test]
    fn literal_brackets_and_lists_obeyed() {
        assert_eq!(
            form_to_json("a[b][1][c]=y&a[b][0][c]=x&t[]=1&t[]=2&empty=&flag").unwrap(),
            json!({"a": {"b": [{"c": "x"}, {"c": "y"}]}, "t": ["1", "2"], "empty": "", "flag": ""})
        );
    }

    #[test]
    fn leading_zero_is_a_name_obeyed() {
        assert_eq!(form_to_json("a[01]=x").unwrap(), json!({"a": {"01": "x"}}));
    }

    #[test]
    fn sparse_index_violated() {
        let m = err("a[0]=x&a[2]=y");
        assert!(m.contains("`a` has an entry [2] but no [1]"), "{m}");
    }

    #[test]
    fn huge_index_violated() {
        let m = err("data[items][1000000][price]=1");
        assert!(m.contains("[1000000]") && m.contains("9999"), "{m}");
        let m = err("a[99999999999999999999999]=1");
        assert!(m.contains("largest allowed"), "{m}");
    }

    #[test]
    fn duplicate_field_violated() {
        assert!(err("a=1&a=2").contains("field `a` is given twice"));
        assert!(err("d[x]=1&d[x]=2").contains("field `d[x]` is given twice"));
    }

    #[test]
    fn value_and_group_violated() {
        assert!(err("a=1&a[b]=2").contains("both as a value and as a group"));
        assert!(err("a[b]=2&a=1").contains("both as a value and as a group"));
    }

    #[test]
    fn mixed_list_and_object_violated() {
        assert!(err("a[0]=1&a[x]=2").contains("mixes numbered entries"));
        assert!(err("a[x]=1&a[0]=2").contains("mixes numbered entries"));
    }

    #[test]
    fn malformed_keys_violated() {
        assert!(err("[a]=1").contains("empty before its first `[`"));
        assert!(err("a[b=1").contains("never closed"));
        assert!(err("a[b]c=1").contains("text after a `]`"));
        assert!(err("a]=1").contains("`]` without a `[`"));
        assert!(err("a[[b]]=1").contains("inside a `[...]` group"));
        let deep = format!("a{}=1", "[x]".repeat(MAX_DEPTH));
        assert!(err(&deep).contains("deeper than"));
    }

    #[test]
    fn invalid_utf8_violated() {
        assert!(err("a=%FF").contains("the value of field `a` is not valid UTF-8"));
    }
}
