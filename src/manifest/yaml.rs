//! Where things are in a YAML file.
//!
//! serde turns a document into typed values but forgets positions, so this module
//! parses the same text once more with an event parser and keeps a light tree of
//! nodes with their line and column. Semantic checks use it to point a diagnostic
//! at the exact value they complain about.

use saphyr_parser::{Event, Parser, ScanError};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub value: NodeValue,
}

/// The shape of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// A scalar, as written (no type resolution).
    Scalar(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping; keys keep their own positions.
    Map(Vec<(Node, Node)>),
    /// An alias (`*name`); its target is not followed.
    Alias,
}

impl Node {
    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value node under `key` when this node is a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            NodeValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The `i`th item when this node is a sequence.
    pub fn index(&self, i: usize) -> Option<&Node> {
        match &self.value {
            NodeValue::Seq(items) => items.get(i),
            _ => None,
        }
    }

    /// The text of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the node is an empty document body (`~`, `null` or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, NodeValue::Scalar(s) if s.is_empty() || s == "~" || s == "null")
    }

    /// Follows a path of keys and indexes; returns the deepest node that exists, so a
    /// diagnostic about a missing field still points somewhere useful.
    pub fn locate(&self, path: &[Seg<'_>]) -> &Node {
        let mut node = self;
        for seg in path {
            let next = match seg {
                Seg::Key(k) => node.get(k),
                Seg::KeyName(k) => node.entry(k).map(|(k, _)| k),
                Seg::Index(i) => node.index(*i),
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }
}

/// Every mapping key that repeats an earlier key of the same mapping, with the
/// position of the first one. serde reports duplicates too, but at the mapping
/// rather than at the repeated key.
pub fn duplicate_keys(node: &Node) -> Vec<(String, Pos, Pos)> {
    let mut out = Vec::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        match &n.value {
            NodeValue::Map(entries) => {
                let mut seen: std::collections::HashMap<&str, Pos> = Default::default();
                for (k, v) in entries {
                    if let Some(key) = k.as_str() {
                        if let Some(first) = seen.get(key) {
                            out.push((key.to_owned(), k.pos, *first));
                        } else {
                            seen.insert(key, k.pos);
                        }
                    }
                    stack.push(v);
                }
            }
            NodeValue::Seq(items) => stack.extend(items.iter()),
            NodeValue::Scalar(_) | NodeValue::Alias => {}
        }
    }
    out.sort_by_key(|(_, pos, _)| *pos);
    out
}

/// One step of a path into a document.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    /// The value under a mapping key.
    Key(&'a str),
    /// The key itself (to point at a field name rather than its value).
    KeyName(&'a str),
    /// An item of a sequence.
    Index(usize),
}

/// A syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// The parser's description.
    pub message: String,
}

impl From<ScanError> for SyntaxError {
    fn from(e: ScanError) -> Self {
        let m = e.marker();
        SyntaxError {
            pos: Pos {
                line: m.line(),
                col: m.col() + 1,
            },
            message: e.info().to_owned(),
        }
    }
}

/// Parses every document of `text` into a position tree.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut docs = Vec::new();
    // Containers being built: the node (with its children so far) and, for
    // mappings, a key waiting for its value.
    let mut stack: Vec<(Node, Option<Node>)> = Vec::new();
    let mut doc_root: Option<Node> = None;
    for item in Parser::new_from_str(text) {
        let (event, span) = item?;
        let pos = Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        };
        let finished = match event {
            Event::DocumentStart(_) => {
                doc_root = None;
                None
            }
            Event::DocumentEnd => {
                docs.push(doc_root.take().unwrap_or(Node {
                    pos,
                    value: NodeValue::Scalar(String::new()),
                }));
                None
            }
            Event::Scalar(s, ..) => Some(Node {
                pos,
                value: NodeValue::Scalar(s.into_owned()),
            }),
            Event::Alias(_) => Some(Node {
                pos,
                value: NodeValue::Alias,
            }),
            Event::SequenceStart(..) => {
                stack.push((
                    Node {
                        pos,
                        value: NodeValue::Seq(Vec::new()),
                    },
                    None,
                ));
                None
            }
            Event::MappingStart(..) => {
                stack.push((
                    Node {
                        pos,
                        value: NodeValue::Map(Vec::new()),
                    },
                    None,
                ));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => stack.pop().map(|(node, _)| node),
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
        };
        if let Some(node) = finished {
            match stack.last_mut() {
                None => doc_root = Some(node),
                Some((parent, pending_key)) => match &mut parent.value {
                    NodeValue::Seq(items) => items.push(node),
                    NodeValue::Map(entries) => match pending_key.take() {
                        None => *pending_key = Some(node),
                        Some(key) => entries.push((key, node)),
                    },
                    NodeValue::Scalar(_) | NodeValue::Alias => {}
                },
            }
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let docs = parse_documents("a: 1\nb:\n  - x\n  - y\n---\nc: d\n").unwrap();
        assert_eq!(docs.len(), 2);
        let b1 = docs[0].locate(&[Seg::Key("b"), Seg::Index(1)]);
        assert_eq!(b1.pos, Pos { line: 4, col: 5 });
        assert_eq!(b1.as_str(), Some("y"));
        let c = docs[1].locate(&[Seg::KeyName("c")]);
        assert_eq!(c.pos, Pos { line: 6, col: 1 });
    }

    #[test]
    fn empty_stream_has_no_documents() {
        assert!(parse_documents("").unwrap().is_empty());
        assert!(parse_documents("# only a comment\n").unwrap().is_empty());
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }
}
