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
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    pub topic: Option<String>,
    pub msg: Option<String>,
    pub hmac: Option<String>,
    /// Flat (unsigned) variant fields.
    pub survey_id: Option<String>,
    pub response_id: Option<String>,
    pub status: Option<String>,
}

impl Form {
    /// Whether the delivery claims to be signed (carries `MSG` or `HMAC`).
    pub fn is_signed_shape(&self) -> bool {
        self.msg.is_some() || self.hmac.is_some()
    }

    fn slot(&mut self, name: &str) -> Option<(&'static str, &mut Option<String>)> {
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
pub fn parse_form(body: &str) -> Result<Form, FormError> {
    let mut form = Form::default();
    let mut fields = 0usize;
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        fields += 1;
        if fields > MAX_FORM_FIELDS {
            return Err(FormError::TooManyFields);
        }
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(raw_name)?;
        if let Some((canonical, slot)) = form.slot(&name) {
            if slot.is_some() {
                return Err(FormError::Duplicate(canonical));
            }
            *slot = Some(form_decode(raw_value)?.into_owned());
        }
    }
    Ok(form)
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; the bytes must
/// be UTF-8. Stricter than browsers: a stray `%` is an error, not a literal. Borrows when there
/// is nothing to decode.
pub fn form_decode(raw: &str) -> Result<Cow<'_, str>, FormError> {
    let bytes = raw.as_bytes();
    let special = |b: &u8| *b == b'%' || *b == b'+';
    let Some(first) = bytes.iter().position(special) else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut rest = &bytes[first..];
    // Escapes are dense in a Qualtrics MSG (every quote and colon): copy the runs between
    // them whole, decode each escape in place.
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            b'+' => {
                out.push(b' ');
                rest = tail;
            }
            b'%' => match tail {
                [hi, lo, after @ ..] => match (hex_val(*hi), hex_val(*lo)) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        rest = after;
                    }
                    _ => return Err(FormError::BadEscape),
                },
                _ => return Err(FormError::BadEscape),
            },
            _ => {
                let run = rest.iter().position(special).unwrap_or(rest.len());
                out.extend_from_slice(&rest[..run]);
                rest = &rest[run..];
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| FormError::NotUtf8)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

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
#[derive(Clone)]
pub struct HmacKey(hmac::Key);

impl HmacKey {
    pub fn new(key: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA512, key))
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
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = hex_val(pair[0])? << 4 | hex_val(pair[1])?;
    }
    Some(out)
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
struct RawMsg {
    #[serde(rename = "SurveyID")]
    survey_id: String,
    #[serde(rename = "ResponseID")]
    response_id: String,
    #[serde(rename = "Status", default)]
    status: Option<String>,
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
    // serde would also fill the struct from a JSON array; only an object is a MSG.
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
pub fn flat_subject(form: &Form) -> Result<Subject, PayloadError> {
    let (Some(s), Some(r)) = (&form.survey_id, &form.response_id) else {
        return Err(PayloadError::Malformed("flat form"));
    };
    subject(
        s.clone(),
        r.clone(),
        form.status.clone(),
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
        let ok = |b: &str| parse_form(b).unwrap();
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
}
