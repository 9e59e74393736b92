//! JSON with comments, as marketing platforms publish their examples.
//!
//! Voyado's interaction-schema examples carry `//` comments inside the JSON, and the
//! documents our users copy them from are often flattened to one line, so a `//` comment
//! that originally ended at a newline now "swallows" the rest of the document:
//!
//! ```text
//! "productSku": { ... }, //Product name, brand, size "pricePaid": { ... } } } }
//! ```
//!
//! [`parse_jsonc`] therefore works in two passes:
//! 1. the standard reading: `//` runs to the end of its line, `/* */` to its close, comments
//!    only outside strings (so `"https://..."` stays intact);
//! 2. only if that does not give valid JSON, the *flattened* reading: a `//` comment also ends
//!    just before the first whitespace-preceded token that the JSON structure expects at
//!    that point (a `"` of the next key, a closing `}`, a `,` ...). The result must still be
//!    valid JSON, or the error of the standard reading is reported.
//!
//! Comments are blanked with spaces (newlines kept) rather than cut out, so the line and
//! column of a JSON error point into the text as the user wrote it.

use super::SchemaError;
use serde_json::Value;

/// Parses JSON that may contain `//` line comments and `/* */` block comments outside
/// strings (and a leading byte-order mark). Trailing commas are not accepted.
///
/// # Errors
/// [`SchemaError::InvalidJson`] with the line and column of the problem (an unterminated
/// block comment, or the JSON error of the standard reading).
pub fn parse_jsonc(text: &str) -> Result<Value, SchemaError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let standard = blank_comments(text, false)?;
    let err = match serde_json::from_str(&standard) {
        Ok(value) => return Ok(value),
        Err(err) => err,
    };
    if text.contains("//")
        && let Ok(flattened) = blank_comments(text, true)
        && let Ok(value) = serde_json::from_str(&flattened)
    {
        return Ok(value);
    }
    let mut message = err.to_string();
    // serde_json appends " at line L column C"; we report those as fields instead.
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    // A `//` comment that swallowed the rest of its line shows as a premature end.
    if text.contains("//") && err.classify() == serde_json::error::Category::Eof {
        message.push_str(" (note: a // comment runs to the end of its line)");
    }
    Err(SchemaError::InvalidJson {
        line: err.line(),
        column: err.column(),
        message,
    })
}

/// What the JSON structure expects next; tracked only to know where a flattened `//`
/// comment can end. It is a best-effort follower, not a validator: serde_json has the last
/// word on whether the result is JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Value,
    /// Right after `{`.
    KeyOrClose,
    /// After `,` inside an object.
    Key,
    Colon,
    CommaOrClose,
    /// Right after `[`.
    ValueOrClose,
    /// The top-level value is complete.
    Done,
}

#[derive(Debug, Default)]
struct Structure {
    stack: Vec<u8>,
    expect: Option<Expect>,
}

impl Structure {
    fn expect(&self) -> Expect {
        self.expect.unwrap_or(Expect::Value)
    }

    fn after_value(&mut self) {
        self.expect = Some(if self.stack.is_empty() {
            Expect::Done
        } else {
            Expect::CommaOrClose
        });
    }

    fn on_string_end(&mut self) {
        match self.expect() {
            Expect::KeyOrClose | Expect::Key => self.expect = Some(Expect::Colon),
            _ => self.after_value(),
        }
    }

    fn on_byte(&mut self, b: u8) {
        match b {
            b'{' => {
                self.stack.push(b'{');
                self.expect = Some(Expect::KeyOrClose);
            }
            b'[' => {
                self.stack.push(b'[');
                self.expect = Some(Expect::ValueOrClose);
            }
            b'}' | b']' => {
                self.stack.pop();
                self.after_value();
            }
            b':' => self.expect = Some(Expect::Value),
            b',' => {
                self.expect = Some(if self.stack.last() == Some(&b'{') {
                    Expect::Key
                } else {
                    Expect::Value
                });
            }
            b if b.is_ascii_whitespace() => {}
            // Numbers and literals: after them comes a comma or a close.
            _ => self.after_value(),
        }
    }

    /// Whether a flattened `//` comment may end before `b`.
    fn resumes_with(&self, b: u8) -> bool {
        match self.expect() {
            Expect::Value => matches!(b, b'"' | b'{' | b'['),
            Expect::KeyOrClose => matches!(b, b'"' | b'}'),
            Expect::Key => b == b'"',
            Expect::Colon => b == b':',
            Expect::CommaOrClose => {
                b == b','
                    || (b == b'}' && self.stack.last() == Some(&b'{'))
                    || (b == b']' && self.stack.last() == Some(&b'['))
            }
            Expect::ValueOrClose => matches!(b, b'"' | b'{' | b'[' | b']'),
            Expect::Done => false,
        }
    }
}

/// Returns `text` with every comment byte replaced by a space (newlines kept).
/// With `flattened`, a `//` comment may also end early (see the module docs).
fn blank_comments(text: &str, flattened: bool) -> Result<String, SchemaError> {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let mut structure = Structure::default();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' {
            // Skip the string, honouring escapes; comment markers inside are content.
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            structure.on_string_end();
            continue;
        }
        if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            let mut j = i + 2;
            while j < bytes.len() && bytes[j] != b'\n' {
                if flattened
                    && bytes[j - 1].is_ascii_whitespace()
                    && structure.resumes_with(bytes[j])
                {
                    break;
                }
                j += 1;
            }
            out[i..j].fill(b' ');
            i = j;
            continue;
        }
        if b == b'/' && bytes.get(i + 1) == Some(&b'*') {
            let close = text[i + 2..].find("*/").map(|k| i + 2 + k + 2);
            let Some(end) = close else {
                let (line, column) = line_column(text, i);
                return Err(SchemaError::InvalidJson {
                    line,
                    column,
                    message: "unterminated /* comment".to_owned(),
                });
            };
            for o in &mut out[i..end] {
                if *o != b'\n' {
                    *o = b' ';
                }
            }
            i = end;
            continue;
        }
        structure.on_byte(b);
        i += 1;
    }
    // Only ASCII comment bytes were turned into spaces, byte for byte, and whole comments
    // at that: multi-byte characters are either kept whole or blanked whole.
    String::from_utf8(out).map_err(|_| SchemaError::InvalidJson {
        line: 1,
        column: 1,
        message: "text is not valid UTF-8 after removing comments".to_owned(),
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, column)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_json_obeyed() {
        assert_eq!(
            parse_jsonc(r#"{"a": [1, 2]}"#).unwrap(),
            json!({"a": [1, 2]})
        );
    }

    #[test]
    fn line_and_block_comments_obeyed() {
        let text = "{\n  // a comment\n  \"a\": 1, /* block\n over lines */ \"b\": \"x\"\n}";
        assert_eq!(parse_jsonc(text).unwrap(), json!({"a": 1, "b": "x"}));
    }

    #[test]
    fn urls_inside_strings_obeyed() {
        let text = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "c": "/* no */"} // end"#;
        assert_eq!(
            parse_jsonc(text).unwrap(),
            json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "c": "/* no */"})
        );
    }

    #[test]
    fn escaped_quote_inside_string_obeyed() {
        let text = r#"{"a": "say \"//hi\"", "b": 2}"#;
        assert_eq!(
            parse_jsonc(text).unwrap(),
            json!({"a": "say \"//hi\"", "b": 2})
        );
    }

    #[test]
    fn flattened_comment_before_closing_braces_obeyed() {
        let text = r#"{ "a": { "b": { "type": "string" } //Product name, brand } }"#;
        assert_eq!(
            parse_jsonc(text).unwrap(),
            json!({"a": {"b": {"type": "string"}}})
        );
    }

    #[test]
    fn flattened_comment_before_next_key_obeyed() {
        let text = r#"{ "a": 1, //Product name, size "b": 2 }"#;
        assert_eq!(parse_jsonc(text).unwrap(), json!({"a": 1, "b": 2}));
    }

    #[test]
    fn multiline_comment_with_quotes_is_not_cut_early_obeyed() {
        // The standard reading works, so the flattened one must not be tried.
        let text = "{ \"a\": 1, // see \"b\" below\n \"b\": 2 }";
        assert_eq!(parse_jsonc(text).unwrap(), json!({"a": 1, "b": 2}));
    }

    #[test]
    fn bom_obeyed() {
        assert_eq!(parse_jsonc("\u{feff}{\"a\": 1}").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn position_of_error_violated() {
        let err = parse_jsonc("{\n  \"a\": 1,\n  \"b\": \n}").unwrap_err();
        assert_eq!(err.code(), "invalid_json");
        let SchemaError::InvalidJson { line, column, .. } = err else {
            panic!("wrong variant: {err:?}")
        };
        assert_eq!((line, column), (4, 1));
    }

    #[test]
    fn unterminated_block_comment_violated() {
        let err = parse_jsonc("{\"a\": 1 /* oops").unwrap_err();
        let SchemaError::InvalidJson {
            line,
            column,
            message,
        } = err
        else {
            panic!("wrong variant: {err:?}")
        };
        assert_eq!((line, column), (1, 9));
        assert!(message.contains("unterminated"), "{message}");
    }

    #[test]
    fn comment_note_only_for_premature_end_violated() {
        let err = parse_jsonc("{\"a\": 1, // fine\n \"b\": }").unwrap_err();
        assert!(!err.to_string().contains("comment runs"), "{err}");
    }

    #[test]
    fn trailing_comma_violated() {
        assert_eq!(
            parse_jsonc(r#"{"a": 1,}"#).unwrap_err().code(),
            "invalid_json"
        );
    }

    #[test]
    fn comment_that_swallows_everything_violated() {
        let err = parse_jsonc(r#"{ "a": 1 // nothing resumes here"#).unwrap_err();
        assert!(err.to_string().contains("comment runs to the end"), "{err}");
    }

    #[test]
    fn multibyte_text_in_comments_obeyed() {
        let text = "{ \"a\": \"é\" // café ☕\n }";
        assert_eq!(parse_jsonc(text).unwrap(), json!({"a": "é"}));
    }
}
