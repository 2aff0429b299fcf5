//! YAML with positions: the `.slipway.yml` text becomes a tree of [`Node`]s that
//! each know their line and column, so every validation error can point at the
//! exact place. Built from `yaml-rust2`'s event parser.
//!
//! Untrusted input: anchors and aliases are supported (CI files use them for
//! shared settings, with `<<` merge keys), but the expanded tree is capped at
//! [`MAX_NODES`] nodes and [`MAX_EXPANDED_BYTES`] bytes of keys and scalars, so a
//! "billion laughs" file (or one long string repeated by aliases) is an error,
//! not an out-of-memory. Nesting is capped at [`MAX_DEPTH`]. Duplicate keys are
//! errors.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Nodes after alias expansion, at most.
pub const MAX_NODES: usize = 100_000;
/// Bytes of keys and scalar values after alias expansion, at most (the file
/// itself is at most 1 MiB).
pub const MAX_EXPANDED_BYTES: usize = 8 << 20;
/// Nesting of sequences and mappings, at most.
pub const MAX_DEPTH: usize = 64;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

impl Span {
    fn of(mark: Marker) -> Span {
        Span {
            line: mark.line(),
            col: mark.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null(Span),
    /// `plain` is false for quoted and block scalars: `"true"` is a string.
    Scalar {
        value: String,
        plain: bool,
        span: Span,
    },
    Seq(Vec<Node>, Span),
    Map(Vec<(Key, Node)>, Span),
}

impl Node {
    pub fn span(&self) -> Span {
        match self {
            Node::Null(s) | Node::Scalar { span: s, .. } | Node::Seq(_, s) | Node::Map(_, s) => *s,
        }
    }

    /// What the node is, for "expected a list, found a string" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null(_) => "nothing",
            Node::Scalar { value, plain, .. } if *plain && is_number(value) => "a number",
            Node::Scalar { value, plain, .. }
                if *plain && matches!(value.as_str(), "true" | "false") =>
            {
                "a boolean"
            }
            Node::Scalar { .. } => "a string",
            Node::Seq(..) => "a list",
            Node::Map(..) => "a mapping",
        }
    }
}

fn is_number(s: &str) -> bool {
    s.parse::<f64>().is_ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub span: Span,
    pub message: String,
}

enum Frame {
    Seq(Vec<Node>, Span, usize),
    Map(MapFrame),
}

/// A mapping being built.
struct MapFrame {
    entries: Vec<(Key, Node)>,
    /// Key name → its index in `entries`, so each key is checked in O(1)
    /// (a file of 50k keys must not cost 50k² comparisons).
    index: HashMap<String, usize>,
    /// A key waiting for its value.
    pending: Option<Key>,
    start: Span,
    anchor: usize,
    /// The keys that came from `<<` merges (an explicit key overrides those).
    merged: std::collections::HashSet<String>,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    documents: Vec<Node>,
    nodes: usize,
    /// Bytes of keys and scalars so far, alias copies included.
    bytes: usize,
    error: Option<YamlError>,
}

/// Nodes and bytes (of keys and scalars) in a tree.
fn size(node: &Node) -> (usize, usize) {
    match node {
        Node::Seq(items, _) => items.iter().fold((1, 0), |(n, b), item| {
            let (n2, b2) = size(item);
            (n + n2, b + b2)
        }),
        Node::Map(entries, _) => entries.iter().fold((1, 0), |(n, b), (k, v)| {
            let (n2, b2) = size(v);
            (n + 1 + n2, b + k.name.len() + b2)
        }),
        Node::Scalar { value, .. } => (1, value.len()),
        Node::Null(_) => (1, 0),
    }
}

impl Builder {
    fn fail(&mut self, span: Span, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                span,
                message: message.into(),
            });
        }
    }

    /// A finished node goes into its parent (or becomes a document).
    fn push(&mut self, node: Node, anchor: usize) {
        // Children were counted when they were pushed; an alias's copy is
        // counted whole where it is expanded (see `on_event`).
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.fail(
                node.span(),
                format!("the document expands to more than {MAX_NODES} nodes (aliases?)"),
            );
            return;
        }
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq(items, ..)) => items.push(node),
            Some(Frame::Map(map)) => match map.pending.take() {
                Some(key) => {
                    if key.name == "<<" {
                        map.merge(node);
                    } else if let Some(&i) = map.index.get(&key.name) {
                        if map.merged.remove(&key.name) {
                            map.entries[i] = (key, node);
                        } else {
                            let span = key.span;
                            let name = key.name.clone();
                            self.fail(span, format!("duplicate key {name:?}"));
                        }
                    } else {
                        map.index.insert(key.name.clone(), map.entries.len());
                        map.entries.push((key, node));
                    }
                }
                None => match node {
                    Node::Scalar { value, span, .. } => {
                        map.pending = Some(Key { name: value, span });
                    }
                    Node::Null(span) => {
                        map.pending = Some(Key {
                            name: String::new(),
                            span,
                        })
                    }
                    other => {
                        let span = other.span();
                        self.fail(span, "a mapping key must be a plain string");
                    }
                },
            },
        }
    }
}

impl MapFrame {
    fn new(start: Span, anchor: usize) -> MapFrame {
        MapFrame {
            entries: Vec::new(),
            index: HashMap::new(),
            pending: None,
            start,
            anchor,
            merged: Default::default(),
        }
    }

    /// `<<: *defaults` (or a list of them): keys not already present are added.
    fn merge(&mut self, source: Node) {
        let sources = match source {
            Node::Seq(items, _) => items,
            other => vec![other],
        };
        for source in sources {
            if let Node::Map(more, _) = source {
                for (key, value) in more {
                    if !self.index.contains_key(&key.name) {
                        self.merged.insert(key.name.clone());
                        self.index.insert(key.name.clone(), self.entries.len());
                        self.entries.push((key, value));
                    }
                }
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let span = Span::of(mark);
        match event {
            Event::Scalar(value, style, anchor, _tag) => {
                // Every scalar's text counts (keys are scalars too); the file
                // bounds this, aliases are counted where they are expanded.
                self.bytes += value.len();
                let plain = style == TScalarStyle::Plain;
                let node = if plain && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL")
                {
                    Node::Null(span)
                } else {
                    Node::Scalar { value, plain, span }
                };
                self.push(node, anchor);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(span, format!("nesting deeper than {MAX_DEPTH} levels"));
                    return;
                }
                self.stack.push(match event {
                    Event::SequenceStart(..) => Frame::Seq(Vec::new(), span, anchor),
                    _ => Frame::Map(MapFrame::new(span, anchor)),
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items, start, anchor)) = self.stack.pop() {
                    self.push(Node::Seq(items, start), anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(map)) = self.stack.pop() {
                    self.push(Node::Map(map.entries, map.start), map.anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    // The whole copy counts, before it is made: this is where
                    // expansion happens.
                    let (nodes, bytes) = size(node);
                    self.bytes = self.bytes.saturating_add(bytes);
                    if self.bytes > MAX_EXPANDED_BYTES {
                        self.fail(
                            span,
                            format!(
                                "the document expands to more than {MAX_EXPANDED_BYTES} bytes of text (aliases?)"
                            ),
                        );
                        return;
                    }
                    self.nodes += nodes.saturating_sub(1);
                    let node = node.clone();
                    self.push(node, 0);
                }
                None => self.fail(span, "alias to an unknown anchor"),
            },
            Event::DocumentStart
            | Event::DocumentEnd
            | Event::StreamStart
            | Event::StreamEnd
            | Event::Nothing => {}
        }
    }
}

/// Parse one YAML document (an empty text is `Null`).
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(YamlError {
            span: Span::of(*e.marker()),
            message: e.info().to_owned(),
        });
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    let mut documents = builder.documents.into_iter();
    let first = documents
        .next()
        .unwrap_or(Node::Null(Span { line: 1, col: 1 }));
    if let Some(second) = documents.next() {
        return Err(YamlError {
            span: second.span(),
            message: "only one YAML document is allowed (found a second `---`)".into(),
        });
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_scalars_and_merges() {
        let text = "a: 1\nb:\n  - x\n  - \"true\"\nbase: &base\n  k: v\n  o: old\nc:\n  <<: *base\n  z: 2\n  o: new\n";
        let Node::Map(entries, _) = parse(text).unwrap() else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.name, "a");
        assert_eq!(entries[0].0.span, Span { line: 1, col: 1 });
        assert_eq!(entries[0].1.kind(), "a number");
        let Node::Seq(items, _) = &entries[1].1 else {
            panic!()
        };
        assert_eq!(items[0].span(), Span { line: 3, col: 5 });
        assert_eq!(items[1].kind(), "a string");
        let Node::Map(c, _) = &entries[3].1 else {
            panic!()
        };
        let names: Vec<&str> = c.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["k", "o", "z"]);
        // The explicit key wins over the merged one.
        assert!(matches!(&c[1].1, Node::Scalar { value, .. } if value == "new"));
    }

    #[test]
    fn hostile_documents_are_errors() {
        let dup = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(
            (dup.span.line, dup.message.as_str()),
            (2, "duplicate key \"a\"")
        );
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = (b'a' + i - 1) as char;
            let cur = (b'a' + i) as char;
            laughs.push_str(&format!(
                "{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        assert!(parse(&laughs).unwrap_err().message.contains("more than"));
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
        assert!(parse("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .message
            .contains("one YAML document"));
        assert!(parse("a: *nope\n").is_err());
        let bad = parse("a: [1, 2\n").unwrap_err();
        assert!(bad.span.line >= 1, "{bad:?}");
    }
}
