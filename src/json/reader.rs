//! A validating JSON reader that walks a text once, borrows the strings it keeps and skips
//! the rest without building anything: the HTTP trigger out of the envelope (past
//! `Identities`, `Metadata`, `Params`), the ids out of a Qualtrics `MSG`.
//!
//! What it accepts is RFC 8259 JSON as serde_json accepts it: the same nesting limit, and
//! like serde_json an unpaired surrogate escape is refused in a string that is kept but
//! only checked for form (`\u` and four hex digits) in one that is skipped. The envelope
//! tests check this against serde_json on generated and mutated envelopes.

use std::borrow::Cow;

/// Nesting deeper than this is refused (serde_json's limit).
const MAX_DEPTH: u32 = 128;

/// Where and why the text stopped being JSON (or the expected shape).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct SyntaxError {
    pub what: &'static str,
    pub at: usize,
}

pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
}

type Result<T> = std::result::Result<T, SyntaxError>;

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            depth: MAX_DEPTH,
        }
    }

    pub fn error(&self, what: &'static str) -> SyntaxError {
        SyntaxError { what, at: self.pos }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        // Compact JSON (what the host sends) has none: one comparison decides.
        if self.peek().is_some_and(|b| b > b' ') {
            return;
        }
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8, what: &'static str) -> Result<()> {
        self.ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// Only whitespace may follow the value just read.
    pub fn end(&mut self) -> Result<()> {
        self.ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    /// Reads an object, calling `member` with each key; `member` must consume the value.
    pub fn object(
        &mut self,
        member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>,
    ) -> Result<()> {
        self.members(true, member)
    }

    /// An object; with `keep_keys` false the keys are only checked (and given as "").
    fn members(
        &mut self,
        keep_keys: bool,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>,
    ) -> Result<()> {
        let (open, close) = ((b'{', "expected an object"), (b'}', "expected `,` or `}`"));
        self.sequence(open, close, |r, _| {
            let key = if keep_keys {
                r.string()?
            } else {
                r.skip_string()?;
                Cow::Borrowed("")
            };
            r.eat(b':', "expected `:`")?;
            member(r, key)
        })
    }

    /// Reads an array, calling `element` for each; `element` must consume the value.
    pub fn array(&mut self, element: impl FnMut(&mut Self, usize) -> Result<()>) -> Result<()> {
        let (open, close) = ((b'[', "expected an array"), (b']', "expected `,` or `]`"));
        self.sequence(open, close, element)
    }

    /// `open`, then items separated by `,` until `close` (none at all is fine), one nesting
    /// level deeper; each byte comes with what the error says when it is missing.
    #[inline(always)]
    fn sequence(
        &mut self,
        (open, no_open): (u8, &'static str),
        (close, no_close): (u8, &'static str),
        mut item: impl FnMut(&mut Self, usize) -> Result<()>,
    ) -> Result<()> {
        self.eat(open, no_open)?;
        self.nest()?;
        self.ws();
        if self.peek() == Some(close) {
            self.pos += 1;
        } else {
            for index in 0.. {
                item(self, index)?;
                self.ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b) if b == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.error(no_close)),
                }
            }
        }
        self.depth += 1;
        Ok(())
    }

    fn nest(&mut self) -> Result<()> {
        self.depth -= 1;
        if self.depth == 0 {
            return Err(self.error("nested too deeply"));
        }
        Ok(())
    }

    /// The first byte of the next value (after whitespace), not consumed.
    pub fn peek_value(&mut self) -> Option<u8> {
        self.ws();
        self.peek()
    }

    /// Whether the next value is `null` (consumed if so).
    pub fn null(&mut self) -> Result<bool> {
        self.ws();
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// A string value, borrowed unless it has escapes to undo.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        self.eat(b'"', "expected a string")?;
        let start = self.pos;
        let mut owned: Option<String> = None;
        let mut run = start;
        loop {
            self.skip_plain();
            let Some(b) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            let text = self.text.get(run..self.pos).unwrap_or("");
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(text),
                        Some(mut s) => {
                            s.push_str(text);
                            Cow::Owned(s)
                        }
                    });
                }
                b'\\' => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(text);
                    self.pos += 1;
                    let c = self.escape()?;
                    s.push(c);
                    run = self.pos;
                }
                _ => return Err(self.error("control character in string")),
            }
        }
    }

    /// Skips any value, checking that it is JSON.
    pub fn skip(&mut self) -> Result<()> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.members(false, |r, _| r.skip()),
            Some(b'[') => self.array(|r, _| r.skip()),
            Some(b'"') => self.skip_string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("expected a value")),
        }
    }

    fn skip_string(&mut self) -> Result<()> {
        self.eat(b'"', "expected a string")?;
        loop {
            self.skip_plain();
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.skip_escape()?;
                }
                Some(_) => return Err(self.error("control character in string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// Advances to the next `"`, `\` or control character (or the end): eight bytes at a
    /// time for the first 64 (keys, and most values, end there), then by `memchr` for the
    /// quote or backslash with the bytes passed checked for control characters in bulk.
    #[inline(always)]
    fn skip_plain(&mut self) {
        let bytes = self.bytes();
        let mut pos = self.pos;
        for _ in 0..8 {
            let Some(chunk) = bytes.get(pos..pos + 8) else {
                break;
            };
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([b'"'; 8]));
            let flagged = crate::swar::json_special(word);
            if flagged != 0 {
                self.pos = pos + flagged.trailing_zeros() as usize / 8;
                return;
            }
            pos += 8;
        }
        self.pos = pos;
        self.skip_plain_long();
    }

    /// [`Self::skip_plain`] past its first 64 bytes (long values, the body), or near the end.
    #[inline(never)]
    fn skip_plain_long(&mut self) {
        let bytes = self.bytes();
        let rest = bytes.get(self.pos..).unwrap_or_default();
        let run = &rest[..memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len())];
        // No early exit, so the compiler checks sixteen bytes per instruction.
        let has_control = run.iter().fold(false, |seen, &b| seen | (b < 0x20));
        self.pos += if has_control {
            run.iter().position(|&b| b < 0x20).unwrap_or(run.len())
        } else {
            run.len()
        };
    }

    /// The character of the escape after a `\`.
    fn escape(&mut self) -> Result<char> {
        let Some(b) = self.peek() else {
            return Err(self.error("unterminated string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                let code = match unit {
                    0xd800..=0xdbff => {
                        if self.bytes().get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.error("unpaired surrogate in string"));
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(self.error("unpaired surrogate in string"));
                        }
                        0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                    }
                    0xdc00..=0xdfff => return Err(self.error("unpaired surrogate in string")),
                    _ => unit,
                };
                char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))?
            }
            _ => {
                self.pos -= 1;
                return Err(self.error("invalid escape"));
            }
        })
    }

    /// Checks the escape after a `\` for form only, as serde_json does in a skipped string.
    fn skip_escape(&mut self) -> Result<()> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                self.pos += 1;
                self.hex4().map(drop)
            }
            Some(_) => Err(self.error("invalid escape")),
            None => Err(self.error("unterminated string")),
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self
            .bytes()
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        let mut value = 0;
        for &d in digits {
            let v = char::from(d)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            value = value << 4 | v;
        }
        self.pos += 4;
        Ok(value)
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.bytes().get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("expected a value"))
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<()> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error("invalid number"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.one_or_more_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.one_or_more_digits()?;
        }
        Ok(())
    }

    fn one_or_more_digits(&mut self) -> Result<()> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            _ => Err(self.error("invalid number")),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}
