//! JSON by hand, where it is read or written on every webhook: [`Reader`] walks the envelope
//! and `MSG`, [`push_str`] writes the string literals of the host reply, the queue message and
//! the log lines (byte for byte what `serde_json` writes). Runs with nothing to escape are
//! found eight bytes at a time rather than through serde's per-byte paths, which cost as
//! much as the rest of a delivery's decoding and reply together.

mod reader;

use crate::swar;

pub use reader::{Reader, SyntaxError};

/// A value that carries no answer: `null`, `""` or `[]` (Qualtrics exports all three for a
/// question left blank). Shared by the ticket rules' presence test and the analytics decoder.
pub fn is_blank(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Appends `s` as a JSON string literal, quotes included.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_escaped(out, s);
    out.push(b'"');
}

/// Appends the inside of a JSON string literal for `s`.
///
/// Written into room for two bytes out per byte in (a quote or backslash becomes two), cut
/// to size at the end: each run is copied eight bytes at a time and each escape stored
/// without a capacity check per piece. The queue message in the reply is a quote every few
/// bytes, so the pieces, not the bytes, are the cost. A control character (never in the
/// handler's own texts) hands the rest to [`escape`].
pub fn push_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let start = out.len();
    out.resize(start + bytes.len() * 2 + 8, 0);
    let buf = &mut out[start..];
    let (mut r, mut w) = (0, 0);
    loop {
        swar::copy_run(bytes, &mut r, buf, &mut w, swar::json_special);
        let Some(&b) = bytes.get(r) else { break };
        match b {
            b'"' | b'\\' => {
                buf[w] = b'\\';
                buf[w + 1] = b;
                w += 2;
            }
            0..0x20 => {
                out.truncate(start + w);
                // A control character is ASCII: `r` is on a character boundary.
                escape(s.get(r..).unwrap_or(""), |piece| {
                    out.extend_from_slice(piece.as_bytes())
                });
                return;
            }
            _ => {
                buf[w] = b;
                w += 1;
            }
        }
        r += 1;
    }
    out.truncate(start + w);
}

/// Hands `emit` the inside of a JSON string literal for `s`, piece by piece: `"` `\` and
/// control characters escaped as `serde_json` escapes them, everything else (all non-ASCII
/// too) as is.
pub fn escape(s: &str, mut emit: impl FnMut(&str)) {
    let bytes = s.as_bytes();
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
            let flagged = swar::json_special(u64::from_le_bytes(*chunk));
            if flagged == 0 {
                i += 8;
                continue;
            }
            // The lowest flag is always a real one (false flags only sit above a real one).
            i += flagged.trailing_zeros() as usize / 8;
        }
        let b = bytes[i];
        if needs_escape(b) {
            // Runs end before an ASCII byte, so they are whole UTF-8.
            emit(s.get(run_start..i).unwrap_or(""));
            emit_escape(b, &mut emit);
            run_start = i + 1;
        }
        i += 1;
    }
    emit(s.get(run_start..).unwrap_or(""));
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn emit_escape(b: u8, emit: &mut impl FnMut(&str)) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    emit(match b {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        0x08 => "\\b",
        0x0c => "\\f",
        b'\n' => "\\n",
        b'\r' => "\\r",
        b'\t' => "\\t",
        _ => {
            let code = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ];
            // ASCII only.
            emit(std::str::from_utf8(&code).unwrap_or(""));
            return;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn literal(s: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_serde_json() {
        for s in [
            "",
            "plain",
            "\"",
            "\\",
            "exactly8",
            "a \"quoted\" \\ word",
            "ctl \u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1f} end",
            "\u{7f} é ü 中 🎉 \u{2028}",
            "{\"v\":1,\"surveyId\":\"SV_1\",\"receivedAt\":\"2026-01-01T00:00:00Z\"}",
            "0123456789abcdef\"0123456789abcdef\\",
        ] {
            assert_eq!(literal(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn any_string_escapes_like_serde_json(s in any::<String>()) {
            prop_assert_eq!(literal(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn ascii_with_specials_escapes_like_serde_json(s in "[ -~\\x00-\\x1f\"\\\\]{0,80}") {
            prop_assert_eq!(literal(&s), serde_json::to_string(&s).unwrap());
        }
    }
}
