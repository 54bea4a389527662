//! Text from elsewhere made safe for a terminal: what a running corral
//! answers (backend names, reasons, errors) before the CLI prints it, and
//! what workers write before it reaches corral's log. Control characters
//! (C0, DEL, C1) and the characters that reorder or break displayed text
//! (bidi embeddings, overrides and isolates, line and paragraph
//! separators) are written as `\u{…}` escapes, so a name such as
//! `app\u{1b}[2J` cannot clear the screen and U+202E cannot reverse a line.

use std::borrow::Cow;

/// Would `c` act on a terminal or on the order of displayed text rather
/// than show as itself?
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every unsafe character escaped (tabs and newlines too).
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_keeping(text, &[])
}

/// `text` with every unsafe character escaped but those in `keep` (a
/// tab in a log line, the newlines between the lines of an error).
pub fn escape_keeping<'a>(text: &'a str, keep: &[char]) -> Cow<'a, str> {
    if !text.chars().any(|c| is_unsafe(c) && !keep.contains(&c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) && !keep.contains(&c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped_and_the_rest_kept() {
        assert_eq!(escape("app\u{1b}[2J"), "app\\u{1b}[2J");
        assert_eq!(
            escape("a\u{202e}b\u{2028}c\u{9b}d"),
            "a\\u{202e}b\\u{2028}c\\u{9b}d"
        );
        assert_eq!(escape("worker-0 ünïcode ok"), "worker-0 ünïcode ok");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_keeping("a\tb\u{7f}", &['\t']), "a\tb\\u{7f}");
    }
}
