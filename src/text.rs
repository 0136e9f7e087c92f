//! Untrusted text (station ids from payloads, topics, token names, ack notes) made safe for
//! a log line or a terminal: control characters and other invisible format characters
//! (ANSI escapes, newlines, bidirectional overrides) shown as escapes, so such text can
//! neither forge a line nor drive a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must never reach a log line or a terminal as is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        // Line and paragraph separators, bidirectional embeddings, overrides and isolates.
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `text` holds a character [`escape`] would change.
pub fn has_unsafe(text: &str) -> bool {
    text.chars().any(is_unsafe)
}

/// `text` with every unsafe character written as an escape (`\n`, `\u{1b}`); unchanged
/// (and not copied) when there is none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !has_unsafe(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "{}", c.escape_default());
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
    fn control_characters_and_ansi_escapes_are_made_visible_and_the_rest_is_kept() {
        assert_eq!(escape("Trạm Đồng Nai \"A\""), "Trạm Đồng Nai \"A\"");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape("S1\n2026-11-30T00:00:00Z INFO \x1b[31mforged\r"),
            "S1\\n2026-11-30T00:00:00Z INFO \\u{1b}[31mforged\\r"
        );
        assert_eq!(escape("a\u{202e}b\u{2028}"), "a\\u{202e}b\\u{2028}");
        assert!(has_unsafe("x\ty") && !has_unsafe("x y"));
    }
}
