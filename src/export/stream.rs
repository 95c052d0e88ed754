//! zip → JSON → NDJSON, streaming and in bounded memory (synchronous; runs on a blocking
//! thread fed by the download).
//!
//! * The export file is a ZIP with one entry (§1.3.3). The entry is read from its local
//!   header on, without the central directory, so it streams: deflate (method 8, with or
//!   without a data descriptor) or stored with known sizes. The CRC-32 is checked at the end,
//!   so a truncated or corrupt download is an error, never a short export. A body that is
//!   not a ZIP but JSON (`compress: false`) is accepted too.
//! * The JSON document is `{"responses":[{…},{…}]}` (§1.3.4). A byte-level scanner finds each
//!   element of the top-level `responses` array and re-emits it on one line with the
//!   insignificant whitespace removed (JSON strings cannot hold a raw newline, so one object
//!   is one line). Nothing else in the document is kept.
//! * Each line's `responseId` and `values.recordedDate` are read for de-duplication, the
//!   fallback cursor and ticket reconciliation.
//! * The NDJSON is cut into blocks of exactly `block_size` bytes (the last one shorter),
//!   regardless of line ends: a block blob is the concatenation of its blocks, and a block
//!   buffer that never grows can be reused by the caller (bounded memory by construction).

use std::collections::{BTreeSet, HashSet};
use std::io::{self, BufRead, BufReader, Read};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How to transform one export file.
#[derive(Debug, Clone)]
pub struct TransformOptions {
    /// Size of every block of NDJSON handed to the sink (the last one may be shorter).
    pub block_size: usize,
    /// Response ids already exported (the overlap of a fallback window): skipped.
    pub skip_ids: HashSet<String>,
    /// Responses recorded within this many ms of the newest one are remembered (`recent`).
    pub overlap_ms: i64,
    /// At most this many remembered ids (the newest win).
    pub recent_cap: usize,
    /// Collect response ids for ticket reconciliation, at most this many.
    pub ticket_cap: Option<usize>,
    /// Collect only responses recorded at or after this (unix ms): the rest are history.
    pub ticket_since_ms: Option<i64>,
}

/// What a transform saw (kept in the state blob between block staging and commit).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub lines: u64,
    pub bytes: u64,
    pub duplicates_skipped: u64,
    /// Newest `recordedDate`, as unix ms.
    pub max_recorded_ms: Option<i64>,
    /// `(recordedDate ms, responseId)` of responses within `overlap_ms` of the newest.
    pub recent: BTreeSet<(i64, String)>,
    /// `recent` lost entries to its cap: a later fallback window may repeat some lines.
    pub recent_truncated: bool,
    pub ticket_ids: Vec<String>,
    pub ticket_ids_dropped: u64,
}

impl Summary {
    fn remember(&mut self, opts: &TransformOptions, recorded_ms: Option<i64>, id: &str) {
        let Some(ms) = recorded_ms else { return };
        let max = self.max_recorded_ms.map_or(ms, |m| m.max(ms));
        self.max_recorded_ms = Some(max);
        if ms >= max - opts.overlap_ms {
            self.recent.insert((ms, id.to_string()));
        }
        let floor = max - opts.overlap_ms;
        while let Some(first) = self.recent.first() {
            if first.0 < floor || self.recent.len() > opts.recent_cap {
                if first.0 >= floor {
                    self.recent_truncated = true;
                }
                self.recent.pop_first();
            } else {
                break;
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Receives each full block in order and returns an empty buffer to fill next (the caller
/// recycles its buffers); the last, possibly shorter, block's returned buffer is dropped.
pub type BlockSink<'a> = dyn FnMut(Vec<u8>) -> io::Result<Vec<u8>> + 'a;

/// Transforms `input` (a ZIP or a JSON document); `sink` receives NDJSON blocks in order.
pub fn transform<R: Read>(
    input: R,
    opts: &TransformOptions,
    sink: &mut BlockSink<'_>,
) -> io::Result<Summary> {
    let mut r = BufReader::with_capacity(64 * 1024, input);
    let head = r.fill_buf()?;
    let mut out = LineSink::new(opts, sink);
    if head.starts_with(b"PK\x03\x04") {
        read_zip_entry(&mut r, &mut out)?;
    } else {
        scan_json(&mut r, &mut out)?;
    }
    out.finish()
}

fn read_zip_entry<R: BufRead>(r: &mut R, out: &mut LineSink<'_, '_>) -> io::Result<()> {
    let mut h = [0u8; 30];
    r.read_exact(&mut h)?;
    let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let flags = u16_at(6);
    let method = u16_at(8);
    let header_crc = u32_at(14);
    let compressed = u32_at(18) as u64;
    let skip = u16_at(26) as u64 + u16_at(28) as u64;
    if flags & 1 != 0 {
        return Err(bad("encrypted zip entries are not supported"));
    }
    io::copy(&mut r.by_ref().take(skip), &mut io::sink())?;
    let has_descriptor = flags & 8 != 0;
    let crc = match method {
        8 => {
            let mut dec = CrcReader::new(flate2::bufread::DeflateDecoder::new(&mut *r));
            scan_json(&mut BufReader::with_capacity(64 * 1024, &mut dec), out)?;
            // Drain anything after the JSON document (normally nothing).
            io::copy(&mut dec, &mut io::sink())?;
            dec.crc.clone().finalize()
        }
        0 if !has_descriptor => {
            let mut dec = CrcReader::new(r.by_ref().take(compressed));
            scan_json(&mut BufReader::with_capacity(64 * 1024, &mut dec), out)?;
            io::copy(&mut dec, &mut io::sink())?;
            dec.crc.clone().finalize()
        }
        m => return Err(bad(format!("zip method {m} is not supported"))),
    };
    let expected = if has_descriptor {
        let mut d = [0u8; 4];
        r.read_exact(&mut d)?;
        if u32::from_le_bytes(d) == 0x0807_4b50 {
            r.read_exact(&mut d)?;
        }
        u32::from_le_bytes(d)
    } else {
        header_crc
    };
    if crc != expected {
        return Err(bad(format!(
            "zip entry CRC mismatch (got {crc:08x}, expected {expected:08x}): truncated or corrupt download"
        )));
    }
    Ok(())
}

struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R> CrcReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Receives complete response objects (compact JSON) and builds NDJSON blocks.
struct LineSink<'a, 's> {
    opts: &'a TransformOptions,
    sink: &'a mut BlockSink<'s>,
    block: Vec<u8>,
    block_size: usize,
    summary: Summary,
}

impl<'a, 's> LineSink<'a, 's> {
    fn new(opts: &'a TransformOptions, sink: &'a mut BlockSink<'s>) -> Self {
        let block_size = opts.block_size.max(1);
        Self {
            opts,
            sink,
            block: Vec::with_capacity(block_size),
            block_size,
            summary: Summary::default(),
        }
    }

    /// Appends to the current block, handing each block over as soon as it is full.
    fn emit(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let take = (self.block_size - self.block.len()).min(bytes.len());
            self.block.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.block.len() == self.block_size {
                let mut next = (self.sink)(std::mem::take(&mut self.block))?;
                next.clear();
                next.reserve(self.block_size);
                self.block = next;
            }
        }
        Ok(())
    }

    fn record(&mut self, obj: &[u8]) -> io::Result<()> {
        let id = string_field(obj, b"\"responseId\":\"")
            .ok_or_else(|| bad("an exported response has no responseId"))?;
        let id = std::str::from_utf8(id).map_err(|_| bad("responseId is not UTF-8"))?;
        if self.opts.skip_ids.contains(id) {
            self.summary.duplicates_skipped += 1;
            return Ok(());
        }
        let recorded = string_field(obj, b"\"recordedDate\":\"")
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| OffsetDateTime::parse(d, &Rfc3339).ok())
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
        let id = id.to_string();
        self.summary.remember(self.opts, recorded, &id);
        let since = self.opts.ticket_since_ms;
        let reconcile = since.is_none_or(|s| recorded.is_some_and(|r| r >= s));
        if let (Some(cap), true) = (self.opts.ticket_cap, reconcile) {
            if self.summary.ticket_ids.len() < cap {
                self.summary.ticket_ids.push(id);
            } else {
                self.summary.ticket_ids_dropped += 1;
            }
        }
        self.emit(obj)?;
        self.emit(b"\n")?;
        self.summary.lines += 1;
        self.summary.bytes += obj.len() as u64 + 1;
        Ok(())
    }

    fn finish(mut self) -> io::Result<Summary> {
        if !self.block.is_empty() {
            (self.sink)(std::mem::take(&mut self.block))?;
        }
        Ok(self.summary)
    }
}

/// The string value after `pattern` (`"key":"`), up to the closing quote. In compact JSON
/// the pattern cannot occur inside a string (an inner quote would be escaped).
fn string_field<'b>(obj: &'b [u8], pattern: &[u8]) -> Option<&'b [u8]> {
    let start = memchr::memmem::find(obj, pattern)? + pattern.len();
    let len = memchr::memchr(b'"', &obj[start..])?;
    Some(&obj[start..start + len])
}

/// Finds the elements of the top-level `responses` array.
fn scan_json<R: BufRead>(r: &mut R, out: &mut LineSink<'_, '_>) -> io::Result<()> {
    let mut depth: u32 = 0;
    let mut in_string = false;
    let mut escape = false;
    let mut key: Vec<u8> = Vec::new();
    let mut last_key_responses = false;
    let mut in_responses = false;
    let mut recording = false;
    let mut seen_root = false;
    let mut rec: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        let mut i = 0;
        while i < n {
            if in_string {
                if escape {
                    escape = false;
                    if recording {
                        rec.push(buf[i]);
                    }
                    i += 1;
                    continue;
                }
                // Jump to the next quote or backslash.
                let j = memchr::memchr2(b'"', b'\\', &buf[i..]).map_or(n, |k| i + k);
                if recording {
                    rec.extend_from_slice(&buf[i..j]);
                } else if depth == 1 && key.len() < 64 {
                    let take = (j - i).min(64 - key.len());
                    key.extend_from_slice(&buf[i..i + take]);
                }
                if j == n {
                    i = n;
                    continue;
                }
                if recording {
                    rec.push(buf[j]);
                }
                if buf[j] == b'\\' {
                    escape = true;
                } else {
                    in_string = false;
                }
                i = j + 1;
                continue;
            }
            let b = buf[i];
            i += 1;
            match b {
                b' ' | b'\n' | b'\r' | b'\t' => {}
                b'"' => {
                    in_string = true;
                    if recording {
                        rec.push(b);
                    } else if depth == 1 {
                        key.clear();
                    }
                }
                b':' => {
                    if recording {
                        rec.push(b);
                    } else if depth == 1 {
                        last_key_responses = key == b"responses";
                    }
                }
                b'{' | b'[' => {
                    if depth == 0 {
                        if seen_root || b != b'{' {
                            return Err(bad("the export file is not one JSON object"));
                        }
                        seen_root = true;
                    }
                    depth += 1;
                    if depth == 2 && b == b'[' && last_key_responses && !recording {
                        in_responses = true;
                    }
                    if in_responses && depth == 3 && !recording {
                        if b != b'{' {
                            return Err(bad("responses[] holds a non-object"));
                        }
                        recording = true;
                        rec.clear();
                    }
                    if recording {
                        rec.push(b);
                    }
                }
                b'}' | b']' => {
                    if depth == 0 {
                        return Err(bad("unbalanced JSON in the export file"));
                    }
                    if recording {
                        rec.push(b);
                        if depth == 3 {
                            recording = false;
                            out.record(&rec)?;
                        }
                    }
                    depth -= 1;
                    if depth == 1 {
                        in_responses = false;
                        last_key_responses = false;
                    }
                }
                _ => {
                    if recording {
                        rec.push(b);
                    } else if depth == 0 {
                        return Err(bad("the export file is not a JSON object"));
                    }
                }
            }
        }
        r.consume(n);
    }
    if !seen_root || depth != 0 || in_string {
        return Err(bad("the export file ends early (truncated JSON)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn opts() -> TransformOptions {
        TransformOptions {
            block_size: 64,
            skip_ids: HashSet::new(),
            overlap_ms: 3_600_000,
            recent_cap: 100,
            ticket_cap: Some(10),
            ticket_since_ms: None,
        }
    }

    fn run(input: &[u8], o: &TransformOptions) -> io::Result<(String, Summary)> {
        let mut all = Vec::new();
        let s = transform(input, o, &mut |mut b| {
            all.extend_from_slice(&b);
            b.clear();
            Ok(b)
        })?;
        Ok((String::from_utf8(all).unwrap(), s))
    }

    const DOC: &str = r#"{ "responses" : [
        {"responseId":"R_1","values":{"recordedDate":"2026-01-01T10:00:00.000Z","QID1":"a \"quoted\" [text] {x}\nnew"},"labels":{}},
        {"responseId":"R_2", "values": {"recordedDate":"2026-01-01T12:00:00Z", "arr":[1, 2, {"k":"v"}]}}
      ], "other": [{"responseId":"R_X"}] }"#;

    #[test]
    fn json_to_ndjson() {
        let (text, s) = run(DOC.as_bytes(), &opts()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in &lines {
            let _: serde_json::Value = serde_json::from_str(l).unwrap();
        }
        assert!(lines[0].contains(r#""a \"quoted\" [text] {x}\nnew""#));
        assert_eq!(s.lines, 2);
        assert_eq!(s.ticket_ids, vec!["R_1", "R_2"]);
        // R_1 is 2 h older than R_2: outside the 1 h overlap.
        assert_eq!(s.recent.len(), 1);
    }

    #[test]
    fn only_responses_recorded_since_the_start_are_reconciled() {
        let since = OffsetDateTime::parse("2026-01-01T11:00:00Z", &Rfc3339).unwrap();
        let o = TransformOptions {
            ticket_since_ms: Some((since.unix_timestamp_nanos() / 1_000_000) as i64),
            ..opts()
        };
        let (text, s) = run(DOC.as_bytes(), &o).unwrap();
        assert_eq!(text.lines().count(), 2, "history is still exported");
        assert_eq!(s.ticket_ids, vec!["R_2"]);
    }

    #[test]
    fn zip_with_descriptor_and_crc() {
        let zip = zip_bytes(DOC.as_bytes(), true);
        let (text, _) = run(&zip, &opts()).unwrap();
        assert_eq!(text.lines().count(), 2);
        let mut corrupt = zip.clone();
        let len = corrupt.len();
        corrupt.truncate(len / 2);
        assert!(run(&corrupt, &opts()).is_err());
        let zip = zip_bytes(b"{\"responses\":[]}", false);
        let (text, s) = run(&zip, &opts()).unwrap();
        assert!(text.is_empty() && s.lines == 0);
    }

    #[test]
    fn skips_known_ids_and_refuses_truncated_json() {
        let mut o = opts();
        o.skip_ids.insert("R_1".into());
        let (text, s) = run(DOC.as_bytes(), &o).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert_eq!(s.duplicates_skipped, 1);
        assert!(run(&DOC.as_bytes()[..DOC.len() - 5], &o).is_err());
    }

    #[test]
    fn blocks_are_full_and_reuse_the_returned_buffers() {
        let (whole, _) = run(
            DOC.as_bytes(),
            &TransformOptions {
                block_size: 1 << 20,
                ..opts()
            },
        )
        .unwrap();
        let o = TransformOptions {
            block_size: 7,
            ..opts()
        };
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        let mut pool = vec![Vec::with_capacity(7), Vec::with_capacity(7)];
        let mut allocations = HashSet::new();
        let s = transform(DOC.as_bytes(), &o, &mut |b| {
            allocations.insert(b.as_ptr() as usize);
            blocks.push(b.clone());
            // Hand the oldest buffer back, as the upload pipeline does.
            pool.insert(0, b);
            Ok(pool.pop().unwrap())
        })
        .unwrap();
        assert_eq!(s.lines, 2);
        let (last, full) = blocks.split_last().unwrap();
        assert!(
            full.iter().all(|b| b.len() == 7),
            "every block but the last is full"
        );
        assert!(!last.is_empty() && last.len() <= 7);
        assert_eq!(blocks.concat(), whole.as_bytes(), "lines may span blocks");
        // The transform's first buffer and the two handed back, nothing else.
        assert!(blocks.len() > 10);
        assert_eq!(allocations.len(), 3);
    }

    /// A minimal ZIP writer (test only): one deflated entry.
    pub fn zip_bytes(data: &[u8], descriptor: bool) -> Vec<u8> {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        let comp = enc.finish().unwrap();
        let crc = crc32fast::hash(data);
        let mut z = Vec::new();
        z.extend_from_slice(b"PK\x03\x04");
        z.extend_from_slice(&20u16.to_le_bytes());
        z.extend_from_slice(&(if descriptor { 8u16 } else { 0 }).to_le_bytes());
        z.extend_from_slice(&8u16.to_le_bytes());
        z.extend_from_slice(&[0; 4]);
        let (c, cs, us) = if descriptor {
            (0, 0, 0)
        } else {
            (crc, comp.len() as u32, data.len() as u32)
        };
        z.extend_from_slice(&c.to_le_bytes());
        z.extend_from_slice(&cs.to_le_bytes());
        z.extend_from_slice(&us.to_le_bytes());
        z.extend_from_slice(&6u16.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(b"a.json");
        z.extend_from_slice(&comp);
        if descriptor {
            z.extend_from_slice(b"PK\x07\x08");
            z.extend_from_slice(&crc.to_le_bytes());
            z.extend_from_slice(&(comp.len() as u32).to_le_bytes());
            z.extend_from_slice(&(data.len() as u32).to_le_bytes());
        }
        z.extend_from_slice(b"PK\x01\x02 central directory follows");
        z
    }
}
