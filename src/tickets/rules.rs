//! The rule language (`when`) and the templates (`subject`, `description`, …) of
//! `[surveys.tickets]`, documented in `docs/tickets.md`.
//!
//! Both are parsed once at start-up (a broken rule or template is a config error naming the
//! file, line and field) and evaluated against one Qualtrics response (`values`, `labels`).
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | operand [op operand]
//! op      := "==" | "!=" | "<" | "<=" | ">" | ">=" | "contains"
//! operand := values.NAME | labels.NAME | values["any name"] | surveyId | responseId
//!          | number | "string" | 'string' | true | false
//! ```

use serde_json::{Map, Value};
use std::fmt;

/// A response as the rules and templates see it.
#[derive(Debug, Clone, Default)]
pub struct ResponseView {
    pub survey_id: String,
    pub response_id: String,
    pub values: Map<String, Value>,
    pub labels: Map<String, Value>,
}

impl ResponseView {
    fn lookup(&self, path: &Path) -> Option<&Value> {
        match path {
            Path::Values(k) => self.values.get(k),
            Path::Labels(k) => self.labels.get(k),
            Path::SurveyId | Path::ResponseId => None,
        }
    }

    fn resolve(&self, path: &Path) -> Option<Value> {
        match path {
            Path::SurveyId => Some(Value::String(self.survey_id.clone())),
            Path::ResponseId => Some(Value::String(self.response_id.clone())),
            _ => self.lookup(path).cloned(),
        }
    }
}

/// A reference into the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    Values(String),
    Labels(String),
    SurveyId,
    ResponseId,
}

impl Path {
    /// The response field (values/labels key) it reads, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Values(k) | Self::Labels(k) => Some(k),
            _ => None,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Values(k) => write!(f, "values.{k}"),
            Self::Labels(k) => write!(f, "labels.{k}"),
            Self::SurveyId => f.write_str("surveyId"),
            Self::ResponseId => f.write_str("responseId"),
        }
    }
}

/// A syntax error with the 1-based column in the rule or template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Path(Path),
    Lit(Value),
}

/// A parsed `when` rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    Or(Vec<Rule>),
    And(Vec<Rule>),
    Not(Box<Rule>),
    Cmp(Operand, Op, Operand),
    /// A bare path: true when the field is present and not empty.
    Present(Path),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(Op),
    LParen,
    RParen,
    Dot,
    LBracket,
    RBracket,
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, SyntaxError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |i: usize, m: String| SyntaxError {
        column: i + 1,
        message: m,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => out.push((start, Tok::LParen)),
            ')' => out.push((start, Tok::RParen)),
            '[' => out.push((start, Tok::LBracket)),
            ']' => out.push((start, Tok::RBracket)),
            '.' if !chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) => {
                out.push((start, Tok::Dot))
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => (Op::Eq, 2),
                    ('!', Some('=')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', _) => (Op::Gt, 1),
                    _ => {
                        return Err(err(
                            i,
                            format!("unexpected `{c}` (comparisons are == != < <= > >=)"),
                        ))
                    }
                };
                out.push((start, Tok::Op(op)));
                i += len;
                continue;
            }
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "unterminated string".into())),
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(e @ ('"' | '\'' | '\\')) => s.push(*e),
                                Some('n') => s.push('\n'),
                                _ => return Err(err(i, "unknown escape in string".into())),
                            }
                            i += 2;
                        }
                        Some(q) if *q == quote => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push((start, Tok::Str(s)));
                continue;
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                let n: f64 = text
                    .parse()
                    .map_err(|_| err(i, format!("`{text}` is not a number")))?;
                out.push((start, Tok::Num(n)));
                i = j;
                continue;
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                out.push((start, Tok::Ident(chars[i..j].iter().collect())));
                i = j;
                continue;
            }
            other => return Err(err(i, format!("unexpected character `{other}`"))),
        }
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn col(&self) -> usize {
        self.toks.get(self.pos).map(|(c, _)| *c).unwrap_or(self.end) + 1
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            column: self.col(),
            message: message.into(),
        })
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(s)) if s == kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Rule, SyntaxError> {
        let mut parts = vec![self.and()?];
        while self.keyword("or") {
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Rule::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Rule, SyntaxError> {
        let mut parts = vec![self.unary()?];
        while self.keyword("and") {
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Rule::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Rule, SyntaxError> {
        if self.keyword("not") {
            return Ok(Rule::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let inner = self.expr()?;
            if self.peek() != Some(&Tok::RParen) {
                return self.err("expected `)`");
            }
            self.pos += 1;
            return Ok(inner);
        }
        let left = self.operand()?;
        let op = match self.peek() {
            Some(Tok::Op(op)) => Some(*op),
            Some(Tok::Ident(s)) if s == "contains" => Some(Op::Contains),
            _ => None,
        };
        match (op, left) {
            (Some(op), left) => {
                self.pos += 1;
                let right = self.operand()?;
                Ok(Rule::Cmp(left, op, right))
            }
            (None, Operand::Path(p)) => Ok(Rule::Present(p)),
            (None, Operand::Lit(_)) => self.err("expected a comparison after a literal"),
        }
    }

    fn operand(&mut self) -> Result<Operand, SyntaxError> {
        let Some(tok) = self.peek().cloned() else {
            return self.err("expected a field, a number or a string, found the end");
        };
        self.pos += 1;
        match tok {
            Tok::Num(n) => Ok(Operand::Lit(num(n))),
            Tok::Str(s) => Ok(Operand::Lit(Value::String(s))),
            Tok::Ident(s) => match s.as_str() {
                "true" => Ok(Operand::Lit(Value::Bool(true))),
                "false" => Ok(Operand::Lit(Value::Bool(false))),
                "surveyId" => Ok(Operand::Path(Path::SurveyId)),
                "responseId" => Ok(Operand::Path(Path::ResponseId)),
                "values" | "labels" => {
                    let key = match self.peek().cloned() {
                        Some(Tok::Dot) => {
                            self.pos += 1;
                            match self.peek().cloned() {
                                Some(Tok::Ident(k)) => {
                                    self.pos += 1;
                                    k
                                }
                                Some(Tok::Num(n)) if n.fract() == 0.0 && n >= 0.0 => {
                                    self.pos += 1;
                                    format!("{}", n as u64)
                                }
                                _ => {
                                    return self.err(format!("expected a field name after `{s}.`"))
                                }
                            }
                        }
                        Some(Tok::LBracket) => {
                            self.pos += 1;
                            let Some(Tok::Str(k)) = self.peek().cloned() else {
                                return self.err("expected a quoted field name in [ ]");
                            };
                            self.pos += 1;
                            if self.peek() != Some(&Tok::RBracket) {
                                return self.err("expected `]`");
                            }
                            self.pos += 1;
                            k
                        }
                        _ => return self.err(format!("expected `.` or `[` after `{s}`")),
                    };
                    Ok(Operand::Path(if s == "values" {
                        Path::Values(key)
                    } else {
                        Path::Labels(key)
                    }))
                }
                other => {
                    self.pos -= 1;
                    self.err(format!(
                        "unknown name `{other}` (use values.NAME, labels.NAME, surveyId, responseId, or quote a string)"
                    ))
                }
            },
            _ => {
                self.pos -= 1;
                self.err("expected a field, a number or a string")
            }
        }
    }
}

fn num(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

impl Rule {
    /// Parses a rule; the error gives the column.
    pub fn parse(src: &str) -> Result<Self, SyntaxError> {
        let toks = lex(src)?;
        if toks.is_empty() {
            return Err(SyntaxError {
                column: 1,
                message: "the rule is empty".into(),
            });
        }
        let mut p = Parser {
            toks,
            pos: 0,
            end: src.chars().count(),
        };
        let rule = p.expr()?;
        if p.pos != p.toks.len() {
            return p.err("expected `and`, `or` or the end of the rule");
        }
        Ok(rule)
    }

    /// Whether the response satisfies the rule.
    pub fn matches(&self, r: &ResponseView) -> bool {
        match self {
            Rule::Or(parts) => parts.iter().any(|p| p.matches(r)),
            Rule::And(parts) => parts.iter().all(|p| p.matches(r)),
            Rule::Not(inner) => !inner.matches(r),
            Rule::Present(p) => r.resolve(p).is_some_and(|v| !crate::json::is_blank(&v)),
            Rule::Cmp(a, op, b) => {
                let (Some(a), Some(b)) = (operand(a, r), operand(b, r)) else {
                    return false;
                };
                compare(&a, *op, &b)
            }
        }
    }
}

fn operand(o: &Operand, r: &ResponseView) -> Option<Value> {
    match o {
        Operand::Lit(v) => Some(v.clone()),
        Operand::Path(p) => r.resolve(p).filter(|v| !v.is_null()),
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn compare(a: &Value, op: Op, b: &Value) -> bool {
    // Multi-valued answers (arrays): the comparison holds when it holds for any element.
    if let Value::Array(items) = a {
        if op == Op::Contains {
            return items.iter().any(|i| compare(i, Op::Eq, b));
        }
        return items.iter().any(|i| compare(i, op, b));
    }
    if let Value::Array(items) = b {
        return items.iter().any(|i| compare(a, op, i));
    }
    if op == Op::Contains {
        return text(a).contains(&text(b));
    }
    if let (Some(x), Some(y)) = (as_number(a), as_number(b)) {
        // Numeric strings compare as numbers, so `values.QID1 <= 6` works on "6" and 6.
        return match op {
            Op::Eq => x == y,
            Op::Ne => x != y,
            Op::Lt => x < y,
            Op::Le => x <= y,
            Op::Gt => x > y,
            Op::Ge => x >= y,
            Op::Contains => false,
        };
    }
    match op {
        Op::Eq => text(a) == text(b),
        Op::Ne => text(a) != text(b),
        // Ordering is numeric only.
        _ => false,
    }
}

/// The text of a value as templates render it.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Object(_) => v.to_string(),
    }
}

/// Every path a rule reads.
pub fn rule_paths(rule: &Rule, out: &mut Vec<Path>) {
    match rule {
        Rule::Or(p) | Rule::And(p) => p.iter().for_each(|r| rule_paths(r, out)),
        Rule::Not(r) => rule_paths(r, out),
        Rule::Present(p) => out.push(p.clone()),
        Rule::Cmp(a, _, b) => {
            for o in [a, b] {
                if let Operand::Path(p) = o {
                    out.push(p.clone());
                }
            }
        }
    }
}

/// A parsed template: literal text and `{{path}}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(Path),
}

impl Template {
    /// Parses `text`; a placeholder is `{{ values.X }}`, `{{ labels.X }}`, `{{ values["a b"] }}`,
    /// `{{ surveyId }}` or `{{ responseId }}`.
    pub fn parse(src: &str) -> Result<Self, SyntaxError> {
        let mut parts = Vec::new();
        let mut rest = src;
        let mut offset = 0; // in chars
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let open_col = offset + rest[..open].chars().count();
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(SyntaxError {
                    column: open_col + 1,
                    message: "`{{` without a closing `}}`".into(),
                });
            };
            let inner = &after[..close];
            let path = match Rule::parse(inner) {
                Ok(Rule::Present(p)) => p,
                Ok(_) => {
                    return Err(SyntaxError {
                        column: open_col + 3,
                        message: format!("`{{{{{inner}}}}}` is not a field (values.NAME, labels.NAME, surveyId, responseId)"),
                    })
                }
                Err(e) => {
                    return Err(SyntaxError {
                        column: open_col + 2 + e.column,
                        message: e.message,
                    })
                }
            };
            parts.push(Part::Field(path));
            let consumed = open + 2 + close + 2;
            offset += rest[..consumed].chars().count();
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Every path the template reads.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(p) => Some(p),
            Part::Text(_) => None,
        })
    }

    /// Renders against a response; a missing field renders as nothing.
    pub fn render(&self, r: &ResponseView) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(path) => {
                    if let Some(v) = r.resolve(path) {
                        out.push_str(&text(&v));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view() -> ResponseView {
        let v = json!({"QID1": 4, "QID2": 3, "QID3": "slow refund", "QID4": [1, 3], "finished": 1, "score": "9"});
        let l = json!({"QID2": "Billing", "QID4": ["Web", "Phone"]});
        ResponseView {
            survey_id: "SV_1".into(),
            response_id: "R_1".into(),
            values: v.as_object().unwrap().clone(),
            labels: l.as_object().unwrap().clone(),
        }
    }

    fn eval(src: &str) -> bool {
        Rule::parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .matches(&view())
    }

    #[test]
    fn rules_evaluate() {
        assert!(eval(r#"values.QID1 <= 6 and labels.QID2 == "Billing""#));
        assert!(!eval(r#"values.QID1 <= 6 and labels.QID2 == "Sales""#));
        assert!(eval(r#"values.QID1 > 8 or labels.QID2 == 'Billing'"#));
        assert!(eval("values.score >= 9"));
        assert!(eval("not (values.QID1 > 6)"));
        assert!(eval("values.QID4 == 3 and labels.QID4 contains \"Phone\""));
        assert!(eval("values.QID3 contains \"refund\""));
        assert!(eval("values.QID3"));
        assert!(!eval("values.missing"));
        assert!(!eval("values.missing == 1"));
        assert!(!eval("values.missing != 1"));
        assert!(eval("not values.missing == 1"));
        assert!(eval("values[\"QID1\"] == 4.0"));
        assert!(eval("surveyId == \"SV_1\""));
        assert!(!eval("values.QID3 < 3"));
        assert!(eval(
            "values.finished == 1 and (values.QID1 < 0 or values.QID2 == 3)"
        ));
    }

    #[test]
    fn syntax_errors_give_columns() {
        for (src, col) in [
            ("values.QID1 <= ", 16),
            ("values.QID1 = 3", 13),
            ("value.QID1 == 3", 1),
            ("values.QID1 == 3 and", 21),
            ("(values.QID1 == 3", 18),
            ("values.QID1 == \"x", 16),
            ("", 1),
            ("3", 2),
            ("values.QID1 == 3 values.QID2", 18),
        ] {
            let e = Rule::parse(src).expect_err(src);
            assert_eq!(e.column, col, "{src}: {e}");
        }
    }

    #[test]
    fn templates_render_and_report_errors() {
        let t = Template::parse(
            "NPS {{values.QID1}} ({{ labels.QID2 }}) {{values.none}}for {{responseId}}",
        )
        .unwrap();
        assert_eq!(t.render(&view()), "NPS 4 (Billing) for R_1");
        let paths: Vec<String> = t.paths().map(|p| p.to_string()).collect();
        assert_eq!(
            paths,
            ["values.QID1", "labels.QID2", "values.none", "responseId"]
        );
        assert_eq!(Template::parse("a {{values.QID1").unwrap_err().column, 3);
        assert_eq!(Template::parse("é {{ value.X }}").unwrap_err().column, 6);
        assert!(Template::parse("{{values.QID1 == 2}}").is_err());
        assert_eq!(
            Template::parse("{{labels.QID4}}").unwrap().render(&view()),
            "Web, Phone"
        );
    }
}
