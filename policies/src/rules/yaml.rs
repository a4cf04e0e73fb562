//! A YAML tree that remembers where every node starts, so that load errors can name the
//! file, line and column. Built from yaml-rust2's event parser.

use std::collections::HashMap;

use yaml_rust2::parser::{Event as YEvent, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node starts: 1-based line and column, and the character index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
    pub index: usize,
}

impl From<Marker> for Mark {
    fn from(m: Marker) -> Self {
        Mark {
            line: m.line(),
            col: m.col() + 1,
            index: m.index(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
}

#[derive(Debug, Clone)]
pub enum Node {
    Scalar {
        value: String,
        style: Style,
        mark: Mark,
    },
    Seq {
        items: Vec<Node>,
        mark: Mark,
    },
    Map {
        entries: Vec<(Node, Node)>,
        mark: Mark,
    },
}

impl Node {
    pub fn mark(&self) -> Mark {
        match self {
            Node::Scalar { mark, .. } | Node::Seq { mark, .. } | Node::Map { mark, .. } => *mark,
        }
    }

    /// What kind of node this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { value, style, .. } => {
                if *style == Style::Plain && is_null(value) {
                    "null"
                } else {
                    "a scalar"
                }
            }
            Node::Seq { .. } => "a sequence",
            Node::Map { .. } => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { value, style: Style::Plain, .. } if is_null(value))
    }

    /// A scalar's text (any scalar: strings, numbers and booleans alike).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// A boolean: `true`/`false` in any case, quoted or not (yaml-cpp, which Falco uses,
    /// converts both).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Scalar { value, .. } => match value.to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map { entries, .. } => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub mark: Mark,
    pub message: String,
}

/// Deepest nesting of sequences and mappings accepted (rules files use fewer than 10).
const MAX_DEPTH: usize = 256;

struct Builder {
    /// Open collections: the node, whether a map key awaits its value, the anchor id.
    stack: Vec<(Node, bool, usize)>,
    docs: Vec<Node>,
    anchors: HashMap<usize, Node>,
    error: Option<YamlError>,
}

impl Builder {
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some((Node::Seq { items, .. }, _, _)) => items.push(node),
            Some((Node::Map { entries, .. }, pending, _)) => {
                // Keys and values alternate; a key waits in `entries` with a null value.
                if *pending {
                    if let Some(last) = entries.last_mut() {
                        last.1 = node;
                    }
                    *pending = false;
                } else {
                    let mark = node.mark();
                    entries.push((
                        node,
                        Node::Scalar {
                            value: String::new(),
                            style: Style::Plain,
                            mark,
                        },
                    ));
                    *pending = true;
                }
            }
            Some((Node::Scalar { .. }, _, _)) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: YEvent, m: Marker) {
        if self.error.is_some() {
            return;
        }
        let mark = Mark::from(m);
        if matches!(ev, YEvent::SequenceStart(..) | YEvent::MappingStart(..))
            && self.stack.len() >= MAX_DEPTH
        {
            self.error = Some(YamlError {
                mark,
                message: format!("the document nests deeper than {MAX_DEPTH} levels"),
            });
            self.stack.clear();
            return;
        }
        match ev {
            YEvent::Scalar(value, style, anchor, _) => {
                let style = match style {
                    TScalarStyle::Plain => Style::Plain,
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => Style::Quoted,
                    _ => Style::Block,
                };
                let n = Node::Scalar { value, style, mark };
                if anchor > 0 {
                    self.anchors.insert(anchor, n.clone());
                }
                self.push(n);
            }
            YEvent::SequenceStart(anchor, _) => self.stack.push((
                Node::Seq {
                    items: Vec::new(),
                    mark,
                },
                false,
                anchor,
            )),
            YEvent::MappingStart(anchor, _) => self.stack.push((
                Node::Map {
                    entries: Vec::new(),
                    mark,
                },
                false,
                anchor,
            )),
            YEvent::SequenceEnd | YEvent::MappingEnd => {
                if let Some((mut n, _, anchor)) = self.stack.pop() {
                    // A block mapping is marked where its first key starts.
                    if let Node::Map { entries, mark } = &mut n {
                        if let Some((k, _)) = entries.first() {
                            if k.mark().index < mark.index {
                                *mark = k.mark();
                            }
                        }
                    }
                    if anchor > 0 {
                        self.anchors.insert(anchor, n.clone());
                    }
                    self.push(n);
                }
            }
            YEvent::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(n) => self.push(n),
                None => {
                    self.error = Some(YamlError {
                        mark,
                        message: "alias refers to an unknown anchor".to_string(),
                    })
                }
            },
            _ => {}
        }
    }
}

/// Parses every document of a YAML text, accepting what libyaml (and so Falco) accepts but a
/// strict YAML 1.2 scanner refuses: flow collections whose lines (typically the closing `]`)
/// are indented no deeper than their parent key. Such lines are re-indented before parsing;
/// flow content ignores indentation, so the meaning is unchanged. Returns the text that was
/// parsed (marks index into it).
pub fn parse_lenient(text: &str) -> Result<(Vec<Node>, String), YamlError> {
    let mut cur = text.to_string();
    for _ in 0..200 {
        match parse(&cur) {
            Ok(d) => return Ok((d, cur)),
            Err(e)
                if e.message == "invalid indentation"
                    || e.message == "invalid indentation in flow construct" =>
            {
                let Some(fixed) =
                    reindent_line(&cur, e.mark.line, e.message.ends_with("construct"))
                else {
                    return Err(e);
                };
                cur = fixed;
            }
            Err(e) => return Err(e),
        }
    }
    parse(&cur).map(|d| (d, cur))
}

/// Indents one (1-based) line by two more spaces when it is a flow continuation line.
fn reindent_line(text: &str, line: usize, any: bool) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 2);
    let mut done = false;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let t = l.trim_start();
            if !(any || t.starts_with(']') || t.starts_with('}')) || l.len() - t.len() > 400 {
                return None;
            }
            out.push_str("  ");
            done = true;
        }
        out.push_str(l);
    }
    done.then_some(out)
}

/// Parses every document of a YAML text.
pub fn parse(text: &str) -> Result<Vec<Node>, YamlError> {
    let mut b = Builder {
        stack: Vec::new(),
        docs: Vec::new(),
        anchors: HashMap::new(),
        error: None,
    };
    // Driven event by event (yaml-rust2's own `load` recurses once per nesting level).
    let mut p = Parser::new_from_str(text);
    loop {
        let (ev, m) = p.next_token().map_err(|e| YamlError {
            mark: Mark::from(*e.marker()),
            message: e.info().to_string(),
        })?;
        if ev == YEvent::StreamEnd {
            break;
        }
        b.on_event(ev, m);
        if let Some(e) = b.error.take() {
            return Err(e);
        }
    }
    Ok(b.docs)
}

/// Maps a character offset inside a scalar's value to its line and column in the source,
/// by walking the source from the scalar's start and matching non-blank characters (folding
/// and indentation only change blanks).
pub fn locate(
    text: &str,
    node_mark: Mark,
    style: Style,
    value: &str,
    offset: usize,
) -> (usize, usize) {
    let mut line = node_mark.line;
    let mut col = node_mark.col;
    let mut src = text.chars().skip(node_mark.index).peekable();
    // Block scalars are marked at their first content character; quoted ones at the quote.
    if style == Style::Quoted && src.next().is_some() {
        col += 1;
    }
    let target = value
        .char_indices()
        .position(|(i, _)| i >= offset)
        .unwrap_or(value.chars().count());
    for (n, vc) in value.chars().enumerate() {
        if vc.is_whitespace() && n < target {
            continue;
        }
        // Advance the source to the next occurrence of this character.
        loop {
            match src.peek().copied() {
                None => return (line, col),
                Some(sc) if sc == vc => break,
                Some(sc) => {
                    src.next();
                    if sc == '\n' {
                        line += 1;
                        col = 1;
                    } else {
                        col += 1;
                    }
                }
            }
        }
        if n >= target {
            return (line, col);
        }
        src.next();
        col += 1;
    }
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_shapes() {
        let docs = parse(
            "- rule: a\n  condition: >\n    x and\n    y = 1\n- list: l\n  items: [a, \"b\"]\n",
        )
        .unwrap();
        let Node::Seq { items, .. } = &docs[0] else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].mark().line, 1);
        let cond = items[0].get("condition").unwrap();
        assert_eq!(cond.as_str(), Some("x and y = 1\n"));
        let Node::Scalar { style, mark, value } = cond else {
            panic!()
        };
        let text =
            "- rule: a\n  condition: >\n    x and\n    y = 1\n- list: l\n  items: [a, \"b\"]\n";
        assert_eq!(locate(text, *mark, *style, value, 6), (4, 5));
        assert_eq!(items[1].mark().line, 5);
        let m = items[1].get("items").unwrap().mark();
        assert_eq!((m.line, m.col), (6, 10));
    }

    #[test]
    fn flow_closers_at_parent_indent_are_accepted() {
        let text = "- list: l\n  items: [\n    \"a\",\n    \"b\"\n  ]\n- list: m\n  items: [x]\n";
        assert!(parse(text).is_err());
        let (docs, _) = parse_lenient(text).unwrap();
        let Node::Seq { items, .. } = &docs[0] else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        assert!(matches!(items[0].get("items"), Some(Node::Seq { items, .. }) if items.len() == 2));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("- rule: a\n  condition: [x\n").unwrap_err();
        assert!(e.mark.line >= 2, "{e:?}");
        let e = parse("- a: *nope\n").unwrap_err();
        assert!(!e.message.is_empty());
    }
}
