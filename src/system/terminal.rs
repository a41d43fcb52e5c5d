//! Text a peer controls (names, memos, addresses, error messages) made
//! safe for a terminal or a log line: control characters, including the
//! escape that starts ANSI and OSC sequences, and the invisible
//! bidirectional overrides that reorder what a line appears to say, are
//! shown as `\u{…}` escapes instead of being interpreted. JSON output
//! stays exact and is never passed through this.

use std::borrow::Cow;

/// Whether `c` would be interpreted by a terminal rather than shown.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// `s` with every unsafe character replaced by `\u{HEX}` (and `\` by `\\`
/// when anything was replaced, so the result reads unambiguously).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn plain_text_is_untouched() {
        assert_eq!(escape("lunch at Zoë's, 12€"), "lunch at Zoë's, 12€");
        assert_eq!(escape("a\\b"), "a\\b");
    }

    #[test]
    fn escapes_and_controls_are_shown_not_run() {
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("\u{1b}]52;c;aGk=\u{7}"), "\\u{1b}]52;c;aGk=\\u{7}");
        assert_eq!(escape("a\nforged row"), "a\\u{a}forged row");
        assert_eq!(escape("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(escape("x\u{202e}gnp.exe"), "x\\u{202e}gnp.exe");
        assert_eq!(escape("\\\u{7}"), "\\\\\\u{7}");
    }
}
