//! Config errors that point at the file, line, column and key that is wrong.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, or 0 when the problem has no place in the file.
    pub line: usize,
    /// 1-based column, or 0 when the problem has no place in the file.
    pub column: usize,
    /// Dotted key path such as `timeouts.connect`, when known.
    pub key: Option<String>,
    pub message: String,
}

/// Everything wrong with one config file; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// An error about the file as a whole (it cannot be read, say).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
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
pub struct Problems<'a> {
    source: &'a str,
    found: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub fn new(source: &'a str) -> Self {
        Problems {
            source,
            found: Vec::new(),
        }
    }

    /// Records a problem with `key` at `span` (a byte range into the source).
    pub fn at(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = line_column(self.source, span.start);
        self.found.push(Problem {
            line,
            column,
            key: Some(key.to_string()),
            message: message.into(),
        });
    }

    /// Records a problem that has no single place in the file.
    pub fn general(&mut self, key: Option<&str>, message: impl Into<String>) {
        self.found.push(Problem {
            line: 0,
            column: 0,
            key: key.map(str::to_string),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub fn into_error(self, file: &Path) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            problems: self.found,
        }
    }
}

/// Turns a toml parse or type error into a problem, naming the key written on
/// the line it points at.
pub fn from_toml(source: &str, err: &toml::de::Error) -> Problem {
    let (line, column, key) = match err.span() {
        Some(span) => {
            let (line, column) = line_column(source, span.start);
            (line, column, key_on_line(source, line))
        }
        None => (0, 0, None),
    };
    Problem {
        line,
        column,
        key,
        message: err.message().trim().to_string(),
    }
}

/// 1-based line and column of byte `offset` in `source`.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
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
    fn key_is_read_from_the_line() {
        let src = "[timeouts]\nconnect = \"2x\"\n";
        assert_eq!(key_on_line(src, 2).as_deref(), Some("connect"));
        assert_eq!(key_on_line(src, 1).as_deref(), Some("timeouts"));
        assert_eq!(key_on_line(src, 9), None);
    }
}
