//! Pure verification of Qualtrics deliveries: one job, no I/O, no secrets kept.
//!
//! * [`parse_form`] splits an `application/x-www-form-urlencoded` body by field name, strictly
//!   (bad escapes and invalid UTF-8 are errors, a repeated known field is an error, unknown
//!   fields are ignored).
//! * [`verify_hmac`] checks the `HMAC` field: lowercase (or upper-case) hex of
//!   HMAC-SHA512(key, exact decoded `MSG`), against every configured key, in constant time.
//! * [`token_matches`] compares a static workflow token in constant time, length included.
//! * [`parse_msg`] / [`parse_workflow`] take the survey and response ids from the *verified*
//!   JSON. Errors never carry the input text (it may hold respondent data).
//!
//! Reference: `external-apis.md` §1.4.2–1.4.3 (form and HMAC), §1.4.6 (workflow task).

use crate::json::{Reader, SyntaxError};
use crate::messages::is_qualtrics_id;
use aws_lc_rs::hmac;
use serde::Deserialize;
use sha2::{Digest, Sha512};
use std::borrow::Cow;
use subtle::{Choice, ConstantTimeEq};

/// Length of the `HMAC` field: 64 bytes of SHA-512 as hex.
pub const HMAC_HEX_LEN: usize = 128;
/// A form with more fields than this is not a Qualtrics delivery (bounds the work per body).
pub const MAX_FORM_FIELDS: usize = 64;

/// Why a form body could not be split into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("form has a malformed percent-escape")]
    BadEscape,
    #[error("form field is not valid UTF-8")]
    NotUtf8,
    #[error("form field {0} appears more than once")]
    Duplicate(&'static str),
    #[error("form has too many fields")]
    TooManyFields,
}

/// The fields of a delivery that matter; everything else is ignored.
/// Values borrow from the body unless they had escapes to decode.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form<'a> {
    pub topic: Option<Cow<'a, str>>,
    pub msg: Option<Cow<'a, str>>,
    pub hmac: Option<Cow<'a, str>>,
    /// Flat (unsigned) variant fields.
    pub survey_id: Option<Cow<'a, str>>,
    pub response_id: Option<Cow<'a, str>>,
    pub status: Option<Cow<'a, str>>,
}

impl<'a> Form<'a> {
    /// Whether the delivery claims to be signed (carries `MSG` or `HMAC`).
    pub fn is_signed_shape(&self) -> bool {
        self.msg.is_some() || self.hmac.is_some()
    }

    fn slot(&mut self, name: &str) -> Option<(&'static str, &mut Option<Cow<'a, str>>)> {
        Some(match name {
            "Topic" => ("Topic", &mut self.topic),
            "MSG" => ("MSG", &mut self.msg),
            "HMAC" => ("HMAC", &mut self.hmac),
            "SurveyID" => ("SurveyID", &mut self.survey_id),
            "ResponseID" => ("ResponseID", &mut self.response_id),
            "Status" => ("Status", &mut self.status),
            _ => return None,
        })
    }
}

/// Splits a form body by field name, in any order. Names are case-sensitive, as Qualtrics
/// sends them; a known name twice is refused (which one would be authentic?).
pub fn parse_form(body: &str) -> Result<Form<'_>, FormError> {
    let mut form = Form::default();
    let mut fields = 0usize;
    // `memchr` rather than `str::split`: core's byte search costs more than the rest of the
    // splitting on a 1 KB body with two separators.
    let mut rest = body;
    while !rest.is_empty() {
        let end = memchr::memchr(b'&', rest.as_bytes()).unwrap_or(rest.len());
        let pair = rest.get(..end).unwrap_or(rest);
        rest = rest.get(end + 1..).unwrap_or("");
        if pair.is_empty() {
            continue;
        }
        fields += 1;
        if fields > MAX_FORM_FIELDS {
            return Err(FormError::TooManyFields);
        }
        let (raw_name, raw_value) = match memchr::memchr(b'=', pair.as_bytes()) {
            Some(eq) => (
                pair.get(..eq).unwrap_or(pair),
                pair.get(eq + 1..).unwrap_or(""),
            ),
            None => (pair, ""),
        };
        let name = form_decode(raw_name)?;
        if let Some((canonical, slot)) = form.slot(&name) {
            if slot.is_some() {
                return Err(FormError::Duplicate(canonical));
            }
            *slot = Some(form_decode(raw_value)?);
        }
    }
    Ok(form)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; the bytes must
/// be UTF-8. Stricter than browsers: a stray `%` is an error, not a literal. Borrows when there
/// is nothing to decode.
pub fn form_decode(raw: &str) -> Result<Cow<'_, str>, FormError> {
    let bytes = raw.as_bytes();
    let Some(first) = memchr::memchr2(b'%', b'+', bytes) else {
        return Ok(Cow::Borrowed(raw));
    };
    // Escapes are dense in a Qualtrics MSG (every quote and colon), the runs between them
    // short: runs are found and copied eight bytes at a time, each chunk stored whole and
    // the write position advanced only past its plain bytes. Decoding never lengthens the
    // text (`w <= r`), so eight spare bytes make room for the last chunk.
    let mut out = vec![0u8; bytes.len() + 8];
    out[..first].copy_from_slice(&bytes[..first]);
    let (mut r, mut w) = (first, first);
    while let Some(&b) = bytes.get(r) {
        match b {
            b'+' => {
                out[w] = b' ';
                r += 1;
            }
            b'%' => {
                let Some(&[hi, lo]) = bytes.get(r + 1..).and_then(<[u8]>::first_chunk::<2>) else {
                    return Err(FormError::BadEscape);
                };
                let (hi, lo) = (HEX_VALUE[usize::from(hi)], HEX_VALUE[usize::from(lo)]);
                if (hi | lo) & 0xf0 != 0 {
                    return Err(FormError::BadEscape);
                }
                out[w] = hi << 4 | lo;
                r += 3;
            }
            _ => {
                out[w] = b;
                r += 1;
            }
        }
        w += 1;
        crate::swar::copy_run(
            bytes,
            &mut r,
            &mut out,
            &mut w,
            crate::swar::percent_or_plus,
        );
    }
    out.truncate(w);
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| FormError::NotUtf8)
}

/// Each byte's value as a hex digit; 0xff for a byte that is not one.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Why a signature was refused. Deliberately coarse: the caller learns nothing about keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("HMAC is not {HMAC_HEX_LEN} hex digits")]
    Malformed,
    #[error("HMAC does not match")]
    Mismatch,
    #[error("no webhook key is configured")]
    NoKey,
}

/// Lowercase hex HMAC-SHA512 of `msg` under `key`: what Qualtrics puts in `HMAC`.
pub fn sign(key: &[u8], msg: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let tag = HmacKey::new(key).mac(msg);
    let mut s = String::with_capacity(HMAC_HEX_LEN);
    for b in tag {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// A webhook key made ready to verify with: the HMAC state after absorbing the padded key, so
/// a delivery costs only its own blocks. aws-lc's SHA-512 (assembly) does the hashing.
/// Cloning shares the prepared state (the key cache hands out a clone per delivery).
#[derive(Clone)]
pub struct HmacKey(std::sync::Arc<hmac::Key>);

impl HmacKey {
    pub fn new(key: &[u8]) -> Self {
        Self(std::sync::Arc::new(hmac::Key::new(hmac::HMAC_SHA512, key)))
    }

    fn mac(&self, msg: &[u8]) -> [u8; 64] {
        let tag = hmac::sign(&self.0, msg);
        let mut out = [0u8; 64];
        // HMAC-SHA512 tags are 64 bytes; a shorter slice would leave zeros, never panic.
        for (o, t) in out.iter_mut().zip(tag.as_ref()) {
            *o = *t;
        }
        out
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

/// Decodes the 128-digit hex `HMAC` field. Upper-case digits are accepted (the reference
/// consumer, Kyma, decodes with Go's `hex.DecodeString`); the MAC bytes are what is compared.
pub fn decode_hmac_hex(field: &str) -> Option<[u8; 64]> {
    let b = field.as_bytes();
    if b.len() != HMAC_HEX_LEN {
        return None;
    }
    let mut out = [0u8; 64];
    let mut seen = 0u8;
    for (byte, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        seen |= hi | lo;
        *byte = hi << 4 | lo;
    }
    // A non-digit anywhere has set a high bit.
    (seen & 0xf0 == 0).then_some(out)
}

/// Verifies `hmac_field` over the exact decoded `msg` against each key; returns the index
/// of the key that matched. Every key is tried (no early exit) and compared in constant time.
pub fn verify_hmac(
    msg: &[u8],
    hmac_field: &str,
    keys: &[HmacKey],
) -> Result<usize, SignatureError> {
    if keys.is_empty() {
        return Err(SignatureError::NoKey);
    }
    let supplied = decode_hmac_hex(hmac_field).ok_or(SignatureError::Malformed)?;
    let mut matched: Option<usize> = None;
    for (i, key) in keys.iter().enumerate() {
        let ok: Choice = key.mac(msg).ct_eq(&supplied);
        if bool::from(ok) && matched.is_none() {
            matched = Some(i);
        }
    }
    matched.ok_or(SignatureError::Mismatch)
}

/// Constant-time comparison of a presented static token with the expected one. Both are
/// hashed first, so neither the content nor the length of the secret leaks through timing.
/// An empty expected token never matches.
pub fn token_matches(expected: &[u8], presented: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let a = Sha512::digest(expected);
    let b = Sha512::digest(presented);
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// The token of a workflow call: `Authorization: Bearer <t>` (scheme case-insensitive) or
/// `X-Bridge-Token: <t>`. Any other header or scheme yields nothing.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Why a verified `MSG` or workflow body is unusable. Never carries the input text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("{0} is not a JSON object with string ids (or has a duplicate key)")]
    Malformed(&'static str),
    #[error("{field} is not a Qualtrics {kind} id")]
    BadId {
        field: &'static str,
        kind: &'static str,
    },
}

/// What a delivery is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub survey_id: String,
    pub response_id: String,
    /// `Status` (`Complete` for a completed response); absent in workflow calls.
    pub status: Option<String>,
}

impl Subject {
    /// Whether the delivery reports a completed response. Workflow calls (no status) are
    /// configured in Qualtrics on the response event, so they count as complete.
    pub fn is_complete(&self) -> bool {
        self.status.as_deref().is_none_or(|s| s == "Complete")
    }
}

#[derive(Deserialize)]
struct RawWorkflow {
    #[serde(rename = "surveyId")]
    survey_id: String,
    #[serde(rename = "responseId")]
    response_id: String,
}

/// Ids from a verified `MSG` (`{"Status","SurveyID","ResponseID",…}`; extra keys ignored,
/// duplicate keys refused).
pub fn parse_msg(msg: &str) -> Result<Subject, PayloadError> {
    let malformed = |_| PayloadError::Malformed("MSG");
    // Only an object is a MSG (and, as Qualtrics writes it, with nothing before it).
    if !msg.starts_with('{') {
        return Err(PayloadError::Malformed("MSG"));
    }
    let (mut survey_id, mut response_id, mut status) = (None, None, None);
    let mut r = Reader::new(msg);
    r.object(|r, key| {
        let slot = match &*key {
            "SurveyID" => &mut survey_id,
            "ResponseID" => &mut response_id,
            "Status" => {
                let value = if r.null()? { None } else { Some(r.string()?) };
                return once(r, &mut status, value);
            }
            _ => return r.skip(),
        };
        let value = r.string()?;
        once(r, slot, value)
    })
    .and_then(|()| r.end())
    .map_err(malformed)?;
    let (Some(survey_id), Some(response_id)) = (survey_id, response_id) else {
        return Err(PayloadError::Malformed("MSG"));
    };
    subject(
        survey_id.into_owned(),
        response_id.into_owned(),
        status.flatten().map(Cow::into_owned),
        "SurveyID",
        "ResponseID",
    )
}

/// Sets a field read from JSON; a second one is an error (which would be authentic?).
fn once<T>(r: &Reader<'_>, slot: &mut Option<T>, value: T) -> Result<(), SyntaxError> {
    if slot.replace(value).is_some() {
        return Err(r.error("duplicate field"));
    }
    Ok(())
}

/// Ids from a workflow web-service body (`{"surveyId","responseId",…}`).
pub fn parse_workflow(body: &str) -> Result<Subject, PayloadError> {
    if !body.trim_start().starts_with('{') {
        return Err(PayloadError::Malformed("JSON body"));
    }
    let raw: RawWorkflow =
        serde_json::from_str(body).map_err(|_| PayloadError::Malformed("JSON body"))?;
    subject(
        raw.survey_id,
        raw.response_id,
        None,
        "surveyId",
        "responseId",
    )
}

/// Ids from the flat unsigned form's top-level fields.
pub fn flat_subject(form: &Form<'_>) -> Result<Subject, PayloadError> {
    let (Some(s), Some(r)) = (form.survey_id.as_deref(), form.response_id.as_deref()) else {
        return Err(PayloadError::Malformed("flat form"));
    };
    subject(
        s.to_owned(),
        r.to_owned(),
        form.status.as_deref().map(str::to_owned),
        "SurveyID",
        "ResponseID",
    )
}

fn subject(
    survey_id: String,
    response_id: String,
    status: Option<String>,
    survey_field: &'static str,
    response_field: &'static str,
) -> Result<Subject, PayloadError> {
    if !is_qualtrics_id(&survey_id, "SV_") {
        return Err(PayloadError::BadId {
            field: survey_field,
            kind: "survey",
        });
    }
    if !is_qualtrics_id(&response_id, "R_") {
        return Err(PayloadError::BadId {
            field: response_field,
            kind: "response",
        });
    }
    Ok(Subject {
        survey_id,
        response_id,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"kyma4ever";

    fn hk(raw: &[&[u8]]) -> Vec<HmacKey> {
        raw.iter().map(|k| HmacKey::new(k)).collect()
    }
    const V1_MSG: &str = r#"{"Status":"Complete","SurveyID":"SV_1AmkKSDmoZ4XlQx","ResponseID":"R_0B7IcnXszjEUHLP","CompletedDate":"2019-06-25 07:58:25","BrandID":"sapdevelopment"}"#;
    const V1_HMAC: &str = "c2c585a404c239aa3063b462cc33551d3ed3ed2de0899f58d456fc0ef7ebef6f3c3af44957989bd0592603e41edde9528f7d9ed09ee128bf719aa12f46e5c598";
    const V2_BODY: &str = "HMAC=5db5cd1e0200e9ce6831ea0f1924beb97f136939e367c53f5af8f7d79c6727af495cb90d6c744fe72ab45efd9f9f2ba7c15b13fdf6565af3d5a4f50ed2c0c7d4&MSG=%7B%22Status%22%3A%22Complete%22%2C%22SurveyID%22%3A%22SV_22VlHYNeldrrrkp%22%2C%22ResponseID%22%3A%22R_1l9mcVuXubb4aGm%22%2C%22CompletedDate%22%3A%222019-06-26%2013%3A28%3A11%22%2C%22BrandID%22%3A%22sapdevelopment%22%7D&Topic=sapdevelopment.surveyengine.completedResponse.SV_22VlHYNeldrrrkp";

    #[test]
    fn published_vector_1_byte_for_byte() {
        assert_eq!(sign(KEY, V1_MSG.as_bytes()), V1_HMAC);
        assert_eq!(verify_hmac(V1_MSG.as_bytes(), V1_HMAC, &hk(&[KEY])), Ok(0));
        let s = parse_msg(V1_MSG).unwrap();
        assert_eq!(
            (s.survey_id.as_str(), s.response_id.as_str()),
            ("SV_1AmkKSDmoZ4XlQx", "R_0B7IcnXszjEUHLP")
        );
        assert!(s.is_complete());
    }

    #[test]
    fn published_vector_2_full_body() {
        let form = parse_form(V2_BODY).unwrap();
        let msg = form.msg.as_deref().unwrap();
        assert_eq!(
            msg,
            r#"{"Status":"Complete","SurveyID":"SV_22VlHYNeldrrrkp","ResponseID":"R_1l9mcVuXubb4aGm","CompletedDate":"2019-06-26 13:28:11","BrandID":"sapdevelopment"}"#
        );
        assert_eq!(
            form.topic.as_deref(),
            Some("sapdevelopment.surveyengine.completedResponse.SV_22VlHYNeldrrrkp")
        );
        let hmac = form.hmac.as_deref().unwrap();
        assert_eq!(sign(KEY, msg.as_bytes()), hmac);
        assert_eq!(
            verify_hmac(msg.as_bytes(), hmac, &hk(&[b"other", KEY])),
            Ok(1)
        );
        assert_eq!(parse_msg(msg).unwrap().response_id, "R_1l9mcVuXubb4aGm");
    }

    #[test]
    fn hmac_table() {
        let good = V1_HMAC.to_string();
        let mut flipped = good.clone().into_bytes();
        flipped[127] = if flipped[127] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        let reserialised =
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(V1_MSG).unwrap())
                .unwrap();
        let trailing = format!("{V1_MSG} ");
        type Case<'a> = (
            &'a str,
            String,
            &'a str,
            Vec<&'a [u8]>,
            Result<usize, SignatureError>,
        );
        let cases: Vec<Case> = vec![
            ("good", good.clone(), V1_MSG, vec![KEY], Ok(0)),
            ("upper-case hex", good.to_uppercase(), V1_MSG, vec![KEY], Ok(0)),
            ("previous key", good.clone(), V1_MSG, vec![b"new", KEY], Ok(1)),
            ("wrong key", good.clone(), V1_MSG, vec![b"kyma4evet"], Err(SignatureError::Mismatch)),
            ("no keys", good.clone(), V1_MSG, vec![], Err(SignatureError::NoKey)),
            ("empty key", good.clone(), V1_MSG, vec![b""], Err(SignatureError::Mismatch)),
            ("truncated", good[..127].to_string(), V1_MSG, vec![KEY], Err(SignatureError::Malformed)),
            ("half", good[..64].to_string(), V1_MSG, vec![KEY], Err(SignatureError::Malformed)),
            ("extended", format!("{good}00"), V1_MSG, vec![KEY], Err(SignatureError::Malformed)),
            ("last digit flipped", flipped, V1_MSG, vec![KEY], Err(SignatureError::Mismatch)),
            ("non-hex", format!("{}zz", &good[..126]), V1_MSG, vec![KEY], Err(SignatureError::Malformed)),
            ("empty", String::new(), V1_MSG, vec![KEY], Err(SignatureError::Malformed)),
            ("spaces", format!(" {}", &good[..127]), V1_MSG, vec![KEY], Err(SignatureError::Malformed)),
            ("sha256 length", good[..64].to_string(), V1_MSG, vec![KEY], Err(SignatureError::Malformed)),
            ("base64 of mac", "wsWFpATCOaowY7RizDNVHT7T7S3giZ9Y1Fb8Dvfr728800RJV5ib0FkmA+Qe3elSj32e0J7hKL9xmqEvRuXFmA==".into(), V1_MSG, vec![KEY], Err(SignatureError::Malformed)),
            ("re-serialised JSON", good.clone(), reserialised.as_str(), vec![KEY], Err(SignatureError::Mismatch)),
            ("MSG with trailing space", good.clone(), trailing.as_str(), vec![KEY], Err(SignatureError::Mismatch)),
            ("HMAC of another MSG", sign(KEY, b"{}"), V1_MSG, vec![KEY], Err(SignatureError::Mismatch)),
            ("MAC under key as message", sign(V1_MSG.as_bytes(), KEY), V1_MSG, vec![KEY], Err(SignatureError::Mismatch)),
            ("prefix 0x", format!("0x{}", &good[..126]), V1_MSG, vec![KEY], Err(SignatureError::Malformed)),
            ("unicode digits", format!("{}١١", &good[..124]), V1_MSG, vec![KEY], Err(SignatureError::Malformed)),
        ];
        for (name, hmac, msg, keys, want) in cases {
            assert_eq!(
                verify_hmac(msg.as_bytes(), &hmac, &hk(&keys)),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn form_table() {
        use FormError::*;
        fn ok(b: &str) -> Form<'_> {
            parse_form(b).unwrap()
        }
        // Any order, extra fields, `+` as space, empty segments.
        let f = ok("x=1&&MSG=a+b%7B&Topic=t&HMAC=h&BrandID=b&");
        assert_eq!(f.msg.as_deref(), Some("a b{"));
        assert_eq!(f.topic.as_deref(), Some("t"));
        assert_eq!(f.hmac.as_deref(), Some("h"));
        assert!(f.is_signed_shape());
        // Names are case-sensitive: `hmac` is an unknown extra field.
        assert_eq!(ok("hmac=h&msg=m"), Form::default());
        // A field without `=` has an empty value.
        assert_eq!(ok("MSG").msg.as_deref(), Some(""));
        // Percent-encoded field names count.
        assert_eq!(ok("%4DSG=m").msg.as_deref(), Some("m"));
        let flat = ok("Topic=t&Status=Complete&SurveyID=SV_1&ResponseID=R_1&CompletedDate=2019-06-26+13%3A28%3A11");
        assert!(!flat.is_signed_shape());
        assert_eq!(flat_subject(&flat).unwrap().survey_id, "SV_1");

        for (body, want) in [
            ("HMAC=a&MSG=b&HMAC=c", Duplicate("HMAC")),
            ("MSG=a&MSG=a", Duplicate("MSG")),
            ("MSG=a&%4DSG=b", Duplicate("MSG")),
            ("Topic=a&Topic=b", Duplicate("Topic")),
            ("SurveyID=SV_1&SurveyID=SV_2", Duplicate("SurveyID")),
            ("MSG=%", BadEscape),
            ("MSG=%4", BadEscape),
            ("MSG=%zz", BadEscape),
            ("MSG=%ff", NotUtf8),
            ("MSG=%C3%28", NotUtf8),
            ("MSG=%ED%A0%80", NotUtf8),
        ] {
            assert_eq!(parse_form(body), Err(want), "{body}");
        }
        // Values of unknown fields are never decoded, so their bad escapes are tolerated;
        // every name is decoded (to find the known ones), so a bad escape there is not.
        assert!(parse_form("junk=%&MSG=m").is_ok());
        assert_eq!(parse_form("junk%=1&MSG=m"), Err(BadEscape));
        let many = "a=1&".repeat(MAX_FORM_FIELDS + 1);
        assert_eq!(parse_form(&many), Err(TooManyFields));
    }

    #[test]
    fn payload_table() {
        let ok = r#"{"SurveyID":"SV_1","ResponseID":"R_2"}"#;
        assert_eq!(parse_msg(ok).unwrap().status, None);
        assert!(
            !parse_msg(r#"{"Status":"Partial","SurveyID":"SV_1","ResponseID":"R_2"}"#)
                .unwrap()
                .is_complete()
        );
        for bad in [
            "",
            "null",
            "[]",
            "\u{feff}{\"SurveyID\":\"SV_1\",\"ResponseID\":\"R_2\"}",
            r#"{"SurveyID":"SV_1"}"#,
            r#"{"ResponseID":"R_2"}"#,
            r#"{"SurveyID":1,"ResponseID":"R_2"}"#,
            r#"{"SurveyID":"SV_1","ResponseID":"R_2","SurveyID":"SV_3"}"#,
            r#"{"SurveyID":"SV_1","ResponseID":"R_2","Status":5}"#,
            r#"{"SurveyID":"R_1","ResponseID":"R_2"}"#,
            r#"{"SurveyID":"SV_1","ResponseID":"SV_2"}"#,
            r#"{"SurveyID":"SV_1/../x","ResponseID":"R_2"}"#,
            r#"{"surveyId":"SV_1","responseId":"R_2"}"#,
            r#"{"SurveyID":"SV_1","ResponseID":"R_2"} trailing"#,
            r#" {"SurveyID":"SV_1","ResponseID":"R_2"}"#,
            r#"["SV_1","R_2","Complete"]"#,
        ] {
            assert!(parse_msg(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_workflow(r#"{"responseId":"R_2","extra":[1],"surveyId":"SV_1"}"#).unwrap(),
            Subject {
                survey_id: "SV_1".into(),
                response_id: "R_2".into(),
                status: None
            }
        );
        for bad in [
            "{}",
            r#"["SV_1","R_2"]"#,
            r#"{"SurveyID":"SV_1","ResponseID":"R_2"}"#,
            r#"{"surveyId":"SV_1","responseId":"R_2","responseId":"R_3"}"#,
            r#"{"surveyId":"SV_1","responseId":""}"#,
        ] {
            assert!(parse_workflow(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_table() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cret", b"s3cre"));
        assert!(!token_matches(b"s3cret", b"s3cret "));
        assert!(!token_matches(b"s3cret", b"S3CRET"));
        assert!(!token_matches(b"", b""));
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    /// The obvious byte-at-a-time decoder the fast one must agree with.
    fn reference_decode(raw: &str) -> Result<String, FormError> {
        let b = raw.as_bytes();
        let (mut out, mut i) = (Vec::new(), 0);
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = b.get(i + 1..i + 3).ok_or(FormError::BadEscape)?;
                    let hex = std::str::from_utf8(hex).map_err(|_| FormError::BadEscape)?;
                    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                        return Err(FormError::BadEscape);
                    }
                    out.push(u8::from_str_radix(hex, 16).map_err(|_| FormError::BadEscape)?);
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| FormError::NotUtf8)
    }

    proptest! {
        #[test]
        fn form_decoding_agrees_with_the_obvious_decoder(
            raw in "([a-zA-Z0-9 ._~é中+]|%[0-9a-fA-FgG%]{0,2}){0,64}"
        ) {
            let fast = form_decode(&raw).map(|c| c.into_owned());
            prop_assert_eq!(fast, reference_decode(&raw), "{:?}", raw);
        }
    }

    #[test]
    fn form_decoding_edge_cases() {
        for raw in [
            "",
            "%",
            "%4",
            "%41",
            "a%41b",
            "+",
            "12345678%41",
            "1234567%41",
            "12345678+",
            "%E4%B8%AD%E6%96%87",
            "%E4%B8",
            "%ff",
            "%C3%A9x",
            "xxxxxxxxxxxxxxxxx%2",
            "%22Status%22%3A%22Complete%22%2C%22SurveyID%22%3A%22SV_22VlHYNeldrrrkp%22",
        ] {
            let fast = form_decode(raw).map(|c| c.into_owned());
            assert_eq!(fast, reference_decode(raw), "{raw:?}");
        }
    }

    /// `parse_msg` as it was written with serde, to check the reader against.
    fn serde_parse_msg(msg: &str) -> Result<Subject, PayloadError> {
        #[derive(Deserialize)]
        struct RawMsg {
            #[serde(rename = "SurveyID")]
            survey_id: String,
            #[serde(rename = "ResponseID")]
            response_id: String,
            #[serde(rename = "Status", default)]
            status: Option<String>,
        }
        if !msg.starts_with('{') {
            return Err(PayloadError::Malformed("MSG"));
        }
        let raw: RawMsg = serde_json::from_str(msg).map_err(|_| PayloadError::Malformed("MSG"))?;
        subject(
            raw.survey_id,
            raw.response_id,
            raw.status,
            "SurveyID",
            "ResponseID",
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The reader-based `parse_msg` accepts and refuses what serde did, and reads the same
        /// ids, on MSGs with fields present, absent, repeated, of other types, and with one
        /// character changed.
        #[test]
        fn parse_msg_agrees_with_serde(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["SurveyID", "ResponseID", "Status", "CompletedDate", "X"]),
                    proptest::prop_oneof![
                        "SV_[a-zA-Z0-9]{1,6}".prop_map(serde_json::Value::from),
                        "R_[a-zA-Z0-9]{1,6}".prop_map(serde_json::Value::from),
                        proptest::prelude::Just(serde_json::Value::from("Complete")),
                        proptest::prelude::Just(serde_json::Value::Null),
                        proptest::prelude::any::<i32>().prop_map(serde_json::Value::from),
                        "[ -~\u{e9}\u{1}]{0,8}".prop_map(serde_json::Value::from),
                        proptest::prelude::Just(serde_json::json!({"a": [1, "\u{2028}", {"b": null}]})),
                    ],
                ),
                0..6,
            ),
            mutate in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(),
                proptest::sample::select(vec!['{', '}', '"', ',', ':', '\\', ' ', 'n', '1']))),
        ) {
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v))
                .collect();
            let mut msg = format!("{{{}}}", body.join(","));
            if let Some((at, c)) = mutate {
                let mut chars: Vec<char> = msg.chars().collect();
                let i = at.index(chars.len());
                chars[i] = c;
                msg = chars.into_iter().collect();
            }
            prop_assert_eq!(parse_msg(&msg), serde_parse_msg(&msg), "{}", msg);
        }
    }
}
