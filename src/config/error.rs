//! Config errors that point at the file, line, column and key that is wrong.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// 1-based line, or 0 when the problem has no place in the file.
    pub(crate) line: usize,
    /// 1-based column, or 0 when the problem has no place in the file.
    pub(crate) column: usize,
    /// Dotted key path such as `timeouts.connect`, when known.
    pub(crate) key: Option<String>,
    pub(crate) message: String,
}

/// Everything wrong with one config file; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub(crate) file: PathBuf,
    pub(crate) problems: Vec<Problem>,
}

impl ConfigError {
    /// An error about the file as a whole (it cannot be read, say).
    pub(crate) fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                key: None,
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if p.line > 0 {
                write!(f, ":{}:{}", p.line, p.column)?;
            }
            write!(f, ": error: ")?;
            if let Some(key) = &p.key {
                write!(f, "key `{key}`: ")?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

/// Collects problems while a raw config is validated, turning byte spans into
/// lines and columns of the source text.
pub(crate) struct Problems<'a> {
    source: &'a str,
    found: Vec<Problem>,
    /// Keys whose value had the wrong type.
    unreadable: Vec<Option<String>>,
    /// Where each key is written, however the file writes it (dotted keys,
    /// inline tables): the byte range of its `key = value` and its full
    /// dotted name.
    index: Vec<(Range<usize>, String)>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(source: &'a str) -> Self {
        Problems {
            source,
            found: Vec::new(),
            unreadable: Vec::new(),
            index: Vec::new(),
        }
    }

    /// Learns where each key is written (see [`super::shape`]).
    pub(crate) fn set_index(&mut self, index: Vec<(Range<usize>, String)>) {
        self.index = index;
    }

    /// The full dotted key written at byte `offset`, if one is.
    pub(crate) fn key_at(&self, offset: usize) -> Option<String> {
        self.index
            .iter()
            .filter(|(range, _)| range.contains(&offset))
            .min_by_key(|(range, _)| range.len())
            .map(|(_, key)| key.clone())
    }

    /// Where `key` (a dotted key, or a section's name) is written.
    pub(crate) fn place_of(&self, key: &str) -> Option<Range<usize>> {
        self.index
            .iter()
            .find(|(_, k)| k == key)
            .map(|(range, _)| range.clone())
    }

    /// Records a problem with `key` at `span` (a byte range into the source).
    pub(crate) fn at(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = line_column(self.source, span.start);
        self.push(Problem {
            line,
            column,
            key: Some(key.to_string()),
            message: message.into(),
        });
    }

    /// Records a problem that has no single place in the file; it points
    /// at the line where the key is written, when it is.
    pub(crate) fn general(&mut self, key: Option<&str>, message: impl Into<String>) {
        let indexed = |k: &str| {
            let (range, _) = self.index.iter().find(|(_, key)| key == k)?;
            Some(line_column(self.source, range.start))
        };
        let (line, column) = key
            .and_then(|k| indexed(k).or_else(|| line_of_key(self.source, k)))
            .unwrap_or((0, 0));
        self.push(Problem {
            line,
            column,
            key: key.map(str::to_string),
            message: message.into(),
        });
    }

    /// Keeps one report per problem: not the same one twice, and nothing
    /// more about a key whose value could not even be read.
    fn push(&mut self, problem: Problem) {
        let said = self.found.iter().any(|p| {
            p.key == problem.key
                && (p.message == problem.message || self.unreadable.contains(&p.key))
        });
        if !said {
            self.found.push(problem);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Adds the problems found while reading the file's types: those keys
    /// could not be read, so nothing more is said about them.
    pub(crate) fn extend(&mut self, problems: Vec<Problem>) {
        for problem in problems {
            self.unreadable.push(problem.key.clone());
            self.found.push(problem);
        }
    }

    /// The problems in the order of the file's lines; those with no place
    /// in it come last.
    pub(crate) fn into_error(mut self, file: &Path) -> ConfigError {
        self.found.sort_by_key(|p| (p.line == 0, p.line, p.column));
        ConfigError {
            file: file.to_path_buf(),
            problems: self.found,
        }
    }
}

/// Turns a toml parse or type error into a problem, naming the full dotted
/// key written on the line it points at (`health.interval`), and, where
/// `config/example.toml` shows the key, how to write it.
pub(crate) fn from_toml(problems: &Problems, err: &toml::de::Error) -> Problem {
    let source = problems.source;
    let (line, column, key) = match err.span() {
        Some(span) => {
            let (line, column) = line_column(source, span.start);
            let key = problems
                .key_at(span.start)
                .or_else(|| dotted_key_on_line(source, line));
            (line, column, key)
        }
        None => (0, 0, None),
    };
    let mut message = err.message().trim().to_string();
    if let Some(example) = key.as_deref().and_then(example_of) {
        message.push_str(&format!("; write it like `{example}`"));
    }
    Problem {
        line,
        column,
        key,
        message,
    }
}

/// Blanks a 1-based line of `text` (spaces keep every other byte where it
/// was, so spans stay right). False when that cannot help: no line, or a
/// value that continues on the next lines.
pub(crate) fn blank_line(text: &mut String, line: usize) -> bool {
    let Some(index) = line.checked_sub(1) else {
        return false;
    };
    let mut offset = 0;
    for (i, current) in text.split_inclusive('\n').enumerate() {
        if i == index {
            let content = current.trim_end_matches('\n');
            let opens = content.matches('[').count() + content.matches('{').count();
            let closes = content.matches(']').count() + content.matches('}').count();
            if content.trim().is_empty() || opens != closes || content.contains("\"\"\"") {
                return false;
            }
            let blank = " ".repeat(content.len());
            text.replace_range(offset..offset + content.len(), &blank);
            return true;
        }
        offset += current.len();
    }
    false
}

/// Where a dotted key (`workers.cwd`) is written: 1-based line and column.
fn line_of_key(source: &str, dotted: &str) -> Option<(usize, usize)> {
    let (table, key) = dotted.rsplit_once('.')?;
    let mut current = String::new();
    for (i, line) in source.lines().enumerate() {
        let text = line.trim();
        if let Some(name) = text.strip_prefix('[') {
            let name = name.trim_start_matches('[');
            current = name[..name.find(']').unwrap_or(name.len())]
                .trim()
                .to_string();
            continue;
        }
        let written = text
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"'));
        if current == table && written == Some(key) {
            let column = line.len() - line.trim_start().len() + 1;
            return Some((i + 1, column));
        }
    }
    None
}

/// The key on a 1-based line with its table's name in front
/// (`[health]` ... `interval` is `health.interval`).
fn dotted_key_on_line(source: &str, line: usize) -> Option<String> {
    let key = key_on_line(source, line)?;
    let text = source.lines().nth(line - 1)?.trim();
    if text.starts_with('[') {
        return Some(key);
    }
    let table = source
        .lines()
        .take(line - 1)
        .filter_map(|l| {
            let l = l.trim();
            let name = l.strip_prefix('[')?.trim_start_matches('[');
            Some(name[..name.find(']')?].trim().to_string())
        })
        .last();
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key,
    })
}

/// How `config/example.toml` writes a key, e.g. `interval = "2s"`.
fn example_of(dotted: &str) -> Option<String> {
    const EXAMPLE: &str = include_str!("../../config/example.toml");
    let (table, key) = dotted.rsplit_once('.')?;
    let mut current = String::new();
    for line in EXAMPLE.lines() {
        let line = line.trim().trim_start_matches("# ").trim();
        if let Some(name) = line.strip_prefix('[') {
            let name = name.trim_start_matches('[');
            if let Some(end) = name.find(']') {
                current = name[..end].trim().to_string();
            }
            continue;
        }
        let Some((k, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.split(" #").next().unwrap_or(value).trim();
        // An empty default ("") shows no way to write the key.
        if current == table && k.trim() == key && value != "\"\"" {
            return Some(format!("{key} = {value}"));
        }
    }
    None
}

/// 1-based line and column of byte `offset` in `source`.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The key (or `[table]` header) written on a 1-based line, if any.
fn key_on_line(source: &str, line: usize) -> Option<String> {
    let text = source.lines().nth(line.checked_sub(1)?)?.trim();
    if let Some(header) = text.strip_prefix('[') {
        let name = header.trim_start_matches('[');
        let end = name.find(']')?;
        return Some(name[..end].trim().to_string());
    }
    let (key, _) = text.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty()).then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbb = \"x\"\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 6), (2, 1));
        assert_eq!(line_column(src, 11), (2, 6));
    }

    #[test]
    fn keys_are_dotted_and_examples_found() {
        let src = "[health]\ninterval = 2\n";
        assert_eq!(
            dotted_key_on_line(src, 2).as_deref(),
            Some("health.interval")
        );
        assert_eq!(
            example_of("health.interval").as_deref(),
            Some("interval = \"2s\"")
        );
        assert!(example_of("workers.command").is_some_and(|e| e.starts_with("command = [")));
    }

    #[test]
    fn blanking_keeps_offsets() {
        let mut text = "a = 1\nb = [1,\n2]\nc = 3\n".to_string();
        assert!(blank_line(&mut text, 1));
        assert_eq!(text.len(), 23);
        assert!(text.starts_with("     \nb"));
        assert!(
            !blank_line(&mut text, 2),
            "a value over several lines stays"
        );
    }

    #[test]
    fn key_is_read_from_the_line() {
        let src = "[timeouts]\nconnect = \"2x\"\n";
        assert_eq!(key_on_line(src, 2).as_deref(), Some("connect"));
        assert_eq!(key_on_line(src, 1).as_deref(), Some("timeouts"));
        assert_eq!(key_on_line(src, 9), None);
    }
}
