//! The shape of the file before its values are read: TOML syntax, which
//! sections and keys it names (against [`super::keys`]), and whether each
//! section is written as what it is (`[[backends]]` is a list of tables,
//! every other section one table). Every TOML form is accepted (dotted keys,
//! inline tables, quoted keys): this pass reads the parsed document, not the
//! lines. It reports each wrong section or key with the keys its section
//! takes and a "did you mean", blanks it out of the text the typed reader
//! sees (so one mistake gives one error), and records where every key is
//! written, for naming the key of any later error.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Key, TableLike};

use super::error::{self, Problem, Problems};
use super::keys;

/// Most syntax errors one file reports.
const MAX_SYNTAX: usize = 50;

/// Checks `text`'s syntax and shape. Returns the text with every wrong part
/// blanked (offsets kept), or `None` when its syntax cannot be read past.
pub fn check(text: &str, p: &mut Problems) -> Option<String> {
    let mut readable = text.to_string();
    let mut syntax = 0;
    let doc = loop {
        match ImDocument::parse(readable.clone()) {
            Ok(doc) => break doc,
            Err(e) => {
                let problem = from_syntax(text, &e);
                let blanked = error::blank_line(&mut readable, problem.line);
                p.extend(vec![problem]);
                syntax += 1;
                if !blanked || syntax >= MAX_SYNTAX {
                    return None;
                }
            }
        }
    };
    let mut walk = Walk::default();
    walk.root(doc.as_table());
    p.set_index(walk.index);
    for (span, key, message) in walk.found {
        p.at(span, &key, message);
    }
    for range in walk.blank {
        blank_lines(&mut readable, range);
    }
    Some(readable)
}

/// A TOML syntax error, at its place.
fn from_syntax(source: &str, err: &toml_edit::TomlError) -> Problem {
    let (line, column) = err
        .span()
        .map_or((0, 0), |s| error::line_column(source, s.start));
    Problem {
        line,
        column,
        key: None,
        // One line per problem: toml_edit's message may take several.
        message: format!("TOML syntax: {}", err.message().trim().replace('\n', ": ")),
    }
}

/// What the walk over the document found.
#[derive(Default)]
struct Walk {
    index: Vec<(Range<usize>, String)>,
    found: Vec<(Range<usize>, String, String)>,
    blank: Vec<Range<usize>>,
}

impl Walk {
    fn root(&mut self, root: &dyn TableLike) {
        for (name, item) in root.iter() {
            let Some((key, _)) = root.get_key_value(name) else {
                continue;
            };
            let at = place(key, item);
            if !keys::SECTIONS.contains(&name) {
                self.stray(name, item, at);
                self.blank_item(key, item);
            } else if let Some(why) = wrong_shape(name, item) {
                self.found.push((at, name.to_string(), why));
                self.blank_item(key, item);
            } else if name == "backends" {
                self.index
                    .extend(anchor(key, item).map(|r| (r, name.to_string())));
                self.backends(item);
            } else if let Some(table) = item.as_table_like() {
                let whole = anchor(key, item);
                self.index
                    .extend(whole.clone().map(|r| (r, name.to_string())));
                // An inline table is one `key = value`: a wrong key inside
                // blanks all of it; a `[header]` table blanks key by key.
                let outer = item.as_inline_table().and(whole);
                self.section(name, table, outer);
            }
        }
    }

    /// A top-level name that is no section: a misspelt section, or a key
    /// written before the first section header.
    fn stray(&mut self, name: &str, item: &Item, at: Range<usize>) {
        let sections = keys::SECTIONS
            .iter()
            .map(|s| format!("[{s}]"))
            .collect::<Vec<_>>()
            .join(", ");
        let owners = keys::sections_with(name);
        let message = if item.is_table_like() || item.is_array_of_tables() {
            match keys::closest(name, keys::SECTIONS) {
                Some(near) => format!("unknown section `[{name}]`: did you mean `[{near}]`? (the sections are {sections})"),
                None => format!("unknown section `[{name}]`: the sections are {sections}"),
            }
        } else if !owners.is_empty() {
            let under = owners
                .iter()
                .map(|s| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join(" or ");
            format!("`{name}` is written before any section header, so it belongs to no section; it is a key of {under}: move it under that header")
        } else {
            format!("`{name}` is written before any section header: every key belongs to a section ({sections})")
        };
        self.found.push((at, name.to_string(), message));
    }

    /// The entries of `[[backends]]` (or `backends = [{...}, ...]`).
    fn backends(&mut self, item: &Item) {
        if let Some(tables) = item.as_array_of_tables() {
            for table in tables.iter() {
                self.section("backends", table, None);
            }
        } else if let Some(array) = item.as_array() {
            for value in array.iter() {
                if let Some(table) = value.as_inline_table() {
                    self.section("backends", table, value.span());
                }
            }
        }
    }

    /// The keys of one section. `outer` is the `key = value` that holds it
    /// when it is written inline: what is blanked for a wrong key inside.
    fn section(&mut self, section: &str, table: &dyn TableLike, outer: Option<Range<usize>>) {
        for (name, item) in table.iter() {
            let Some((key, _)) = table.get_key_value(name) else {
                continue;
            };
            let dotted = format!("{section}.{name}");
            if keys::find(section, name).is_some() {
                if let Some(range) = anchor(key, item) {
                    self.index.push((range, dotted));
                }
                continue;
            }
            let at = place(key, item);
            self.found.push((at, dotted, unknown_key(section, name)));
            match &outer {
                Some(range) => self.blank.push(range.clone()),
                None => self.blank_item(key, item),
            }
        }
    }

    /// Marks `key = item` (a whole table with its keys, when it is one) to
    /// be blanked.
    fn blank_item(&mut self, key: &Key, item: &Item) {
        self.blank.extend(key.span());
        self.blank.extend(item.span());
        if let Some(table) = item.as_table_like() {
            for (name, child) in table.iter() {
                if let Some((k, _)) = table.get_key_value(name) {
                    self.blank_item(k, child);
                }
            }
        }
        if let Some(tables) = item.as_array_of_tables() {
            for table in tables.iter() {
                self.blank.extend(table.span());
                for (name, child) in table.iter() {
                    if let Some((k, _)) = table.get_key_value(name) {
                        self.blank_item(k, child);
                    }
                }
            }
        }
    }
}

/// Why a known section is not written as what it is, if it is not.
fn wrong_shape(name: &str, item: &Item) -> Option<String> {
    if name == "backends" {
        let inline_list = item
            .as_array()
            .is_some_and(|a| a.iter().all(|v| v.is_inline_table()));
        return match item {
            _ if item.is_array_of_tables() || inline_list => None,
            _ if item.is_table_like() => Some(
                "`[backends]` (one bracket) makes one table, but backends are a list: write `[[backends]]` (two brackets) above each backend's name and address".into(),
            ),
            _ => Some("backends are a list of tables: write `[[backends]]` above each backend's `name = \"app\"` and `address = \"127.0.0.1:3000\"`".into()),
        };
    }
    if item.is_table_like() {
        return None;
    }
    if item.is_array_of_tables() {
        return Some(format!(
            "`[[{name}]]` (two brackets) makes a list of tables, but [{name}] is one table: write `[{name}]` (one bracket), once"
        ));
    }
    let example = keys::of_section(name)
        .next()
        .map_or(String::new(), |k| format!(", such as `{}`", k.name));
    Some(format!(
        "`{name}` is a section, not a value: write `[{name}]` and its keys under it{example}"
    ))
}

/// "unknown key", with the keys of its own section, a "did you mean" for a
/// slip, and the section it belongs to when it is misplaced.
fn unknown_key(section: &str, name: &str) -> String {
    let known: Vec<&str> = keys::of_section(section).map(|k| k.name).collect();
    let mut message = format!(
        "unknown key `{name}` in [{section}], which takes {}",
        known.join(", ")
    );
    if let Some(near) = keys::closest(name, known.iter().copied()) {
        message.push_str(&format!("; did you mean `{near}`?"));
        return message;
    }
    let owners: Vec<String> = keys::sections_with(name)
        .into_iter()
        .filter(|s| *s != section)
        .map(|s| format!("[{s}]"))
        .collect();
    if !owners.is_empty() {
        message.push_str(&format!(
            "; `{name}` is a key of {}: move it there",
            owners.join(" and ")
        ));
    }
    message
}

/// Where an error about `key = item` points: the key, else the item.
fn place(key: &Key, item: &Item) -> Range<usize> {
    key.span().or_else(|| item.span()).unwrap_or(0..0)
}

/// The bytes of `key = value` (or of a table's header and keys).
fn anchor(key: &Key, item: &Item) -> Option<Range<usize>> {
    match (key.span(), item.span()) {
        (Some(k), Some(v)) => Some(k.start.min(v.start)..k.end.max(v.end)),
        (k, v) => k.or(v),
    }
}

/// Blanks every line `range` touches (spaces keep the offsets).
fn blank_lines(text: &mut String, range: Range<usize>) {
    let start = text[..range.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[range.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| range.end.min(text.len()) + i);
    // A character becomes as many spaces as it has bytes.
    let blank: String = text[start..end]
        .chars()
        .map(|c| match c {
            '\n' => "\n".to_string(),
            c => " ".repeat(c.len_utf8()),
        })
        .collect();
    text.replace_range(start..end, &blank);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(text: &str) -> (Option<String>, Vec<Problem>) {
        let mut p = Problems::new(text);
        let readable = check(text, &mut p);
        (readable, p.into_error(std::path::Path::new("t")).problems)
    }

    #[test]
    fn dotted_and_inline_keys_are_keys() {
        let (readable, problems) = shape(
            "workers.command = [\"sh\"]\nworkers.env = { A = \"1\" }\n[health]\n\"interval\" = \"2s\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(readable.is_some());
    }

    #[test]
    fn a_misspelt_section_is_named_with_its_near_miss() {
        let (_, problems) = shape("[worker]\ncommand = [\"sh\"]\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("did you mean `[workers]`"));
        assert_eq!(problems[0].line, 1);
    }

    #[test]
    fn one_bracket_backends_is_one_error_and_blanked() {
        let text = "[log]\nlevel = \"info\"\n[backends]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";
        let (readable, problems) = shape(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("[[backends]]"));
        let readable = readable.unwrap();
        assert_eq!(readable.len(), text.len());
        assert!(!readable.contains("name"), "{readable}");
    }

    #[test]
    fn a_syntax_error_is_one_line() {
        let (_, problems) = shape("[health]\nrise = 2\n[health]\nfall = 2\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, 3);
        assert!(!problems[0].message.contains('\n'), "{problems:?}");
    }

    #[test]
    fn a_misplaced_key_names_its_section() {
        let (_, problems) = shape("[admin]\ncount = 4\n");
        assert!(problems[0].message.contains("[workers]"), "{problems:?}");
        assert!(problems[0].message.contains("bind, token_file"));
        assert_eq!(problems[0].key.as_deref(), Some("admin.count"));
    }

    #[test]
    fn blanking_keeps_offsets_with_wide_characters() {
        let mut text = "a = \"é\"\nb = 1\n".to_string();
        let len = text.len();
        blank_lines(&mut text, 0..3);
        assert_eq!(text.len(), len);
        assert!(text.ends_with("\nb = 1\n"));
    }
}
