//! `qualtrics-bridge subscriptions sync`: reconciles the Qualtrics event subscriptions of
//! this app's webhook URL with `bridge.toml` (reference `external-apis.md` §1.4.1).
//!
//! [`plan`] is pure: from the listed subscriptions, the wanted topics and our URL it decides
//! what to keep, create and delete. Subscriptions of any other URL are never touched.
//! [`execute`] creates first and deletes only when every create succeeded, so a topic is
//! never left without a subscription (Qualtrics has no update: replace = create, then delete).

use crate::qualtrics::{CallBudget, EventSubscription, QualtricsClient, QualtricsError};
use crate::secrets::{Secret, SecretsProvider};
use url::Url;

/// The topic of completed responses of one survey.
pub fn topic_of(survey_id: &str) -> String {
    format!("surveyengine.completedResponse.{survey_id}")
}

/// The query parameter holding the Functions key (`authLevel: function`).
const KEY_PARAM: &str = "code";

/// The webhook URL this app is reached at, compared in normalised form.
#[derive(Debug, Clone)]
pub struct OurUrl {
    url: Url,
    base: String,
    code: Option<String>,
}

/// Why `--url` is not usable.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("--url: not a URL: {0}")]
    Parse(url::ParseError),
    #[error("--url: {0}:// is not allowed; use https (http only for loopback)")]
    Scheme(String),
}

impl OurUrl {
    /// `https://…` (http only for loopback hosts, as for the other outbound URLs).
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let url = Url::parse(text.trim()).map_err(UrlError::Parse)?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            s => return Err(UrlError::Scheme(s.to_string())),
        }
        let (base, code) = normalise(&url);
        Ok(Self { url, base, code })
    }

    /// The URL to register, exactly as given (with its key).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The URL with the Functions key masked, for output.
    pub fn masked(&self) -> String {
        mask(self.url.as_str())
    }

    /// Same endpoint, whatever its key.
    fn is_ours(&self, publication_url: &str) -> bool {
        Url::parse(publication_url.trim()).is_ok_and(|u| normalise(&u).0 == self.base)
    }

    /// Same endpoint and, when `--url` carries a key, the same key.
    fn is_current(&self, publication_url: &str) -> bool {
        Url::parse(publication_url.trim()).is_ok_and(|u| {
            let (base, code) = normalise(&u);
            base == self.base && (self.code.is_none() || code == self.code)
        })
    }
}

/// `(scheme://host[:port]/path?other-params, code)`: lower-case scheme and host (the url
/// crate does that), default port dropped, trailing `/` ignored, query parameters sorted,
/// no fragment; the key apart.
fn normalise(url: &Url) -> (String, Option<String>) {
    let mut code = None;
    let mut rest: Vec<(String, String)> = Vec::new();
    for (k, v) in url.query_pairs() {
        if k == KEY_PARAM {
            code = Some(v.into_owned());
        } else {
            rest.push((k.into_owned(), v.into_owned()));
        }
    }
    rest.sort();
    let mut base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        base.push_str(&format!(":{port}"));
    }
    base.push_str(url.path().trim_end_matches('/'));
    if !rest.is_empty() {
        let q: Vec<String> = rest.iter().map(|(k, v)| format!("{k}={v}")).collect();
        base.push('?');
        base.push_str(&q.join("&"));
    }
    (base, code)
}

/// `text` with the value of `code=` replaced by `***`.
fn mask(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut u) if u.query_pairs().any(|(k, _)| k == KEY_PARAM) => {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == KEY_PARAM { "***".into() } else { v };
                    (k.into_owned(), v.into_owned())
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
            u.to_string().replace("%2A%2A%2A", "***")
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not a URL)".into(),
    }
}

/// Why a subscription goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its survey is no longer in `bridge.toml` (or its topic never was one of ours).
    Stale,
    /// Another subscription of ours already covers the topic.
    Duplicate,
    /// It points at our endpoint with another Functions key than `--url`'s.
    OtherKey,
    /// `--rotate-key`: replaced by one created with the current key.
    Rotated,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Stale => "stale: survey not in bridge.toml",
            Self::Duplicate => "duplicate",
            Self::OtherKey => "replaced: another function key in its URL",
            Self::Rotated => "replaced: --rotate-key",
        }
    }
}

/// A subscription to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: String,
    pub topic: String,
    pub reason: Reason,
}

/// What [`execute`] will do. Creates run before deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// `(id, topic)` of subscriptions left as they are.
    pub keep: Vec<(String, String)>,
    /// Topics to subscribe.
    pub create: Vec<String>,
    pub delete: Vec<Deletion>,
    /// Subscriptions of other URLs, never touched.
    pub foreign: usize,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// Decides the changes. `wanted` are topics; `existing` in listing order (the first current
/// subscription of a topic is the one kept).
pub fn plan(
    existing: &[EventSubscription],
    wanted: &[String],
    ours: &OurUrl,
    rotate: bool,
) -> Plan {
    let mut p = Plan::default();
    let mut mine = Vec::new();
    for s in existing {
        if ours.is_ours(&s.publication_url) {
            mine.push(s);
        } else {
            p.foreign += 1;
        }
    }
    let delete = |p: &mut Plan, s: &EventSubscription, reason| {
        p.delete.push(Deletion {
            id: s.id.clone(),
            topic: s.topics.clone(),
            reason,
        })
    };
    for s in &mine {
        if !wanted.contains(&s.topics) {
            delete(&mut p, s, Reason::Stale);
        }
    }
    let mut seen = Vec::new();
    for topic in wanted {
        if seen.contains(&topic) {
            continue;
        }
        seen.push(topic);
        let subs: Vec<&EventSubscription> = mine
            .iter()
            .copied()
            .filter(|s| &s.topics == topic)
            .collect();
        let kept = if rotate {
            None
        } else {
            subs.iter()
                .copied()
                .find(|s| ours.is_current(&s.publication_url))
        };
        match kept {
            Some(k) => p.keep.push((k.id.clone(), topic.clone())),
            None => p.create.push(topic.clone()),
        }
        for s in subs {
            if kept.is_some_and(|k| k.id == s.id) {
                continue;
            }
            let reason = if rotate {
                Reason::Rotated
            } else if !ours.is_current(&s.publication_url) {
                Reason::OtherKey
            } else {
                Reason::Duplicate
            };
            delete(&mut p, s, reason);
        }
    }
    p
}

/// What [`execute`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// `(topic, new id)`.
    pub created: Vec<(String, String)>,
    /// Ids deleted (or already gone).
    pub deleted: Vec<String>,
    /// What failed, one line each; empty on success.
    pub failures: Vec<String>,
}

/// Runs the plan: every create, then, only if all of them succeeded, every delete. A delete
/// answered 404 counts as done (someone else removed it).
pub async fn execute(
    client: &QualtricsClient,
    secrets: &SecretsProvider,
    budget: &CallBudget,
    plan: &Plan,
    ours: &OurUrl,
    key: &Secret,
) -> Report {
    let mut r = Report::default();
    for topic in &plan.create {
        match client
            .create_event_subscription(secrets, budget, topic, ours.as_str(), key)
            .await
        {
            Ok(id) => r.created.push((topic.clone(), id)),
            Err(e) => r.failures.push(format!("create {topic}: {e}")),
        }
    }
    if !r.failures.is_empty() {
        r.failures
            .push("nothing deleted: a create failed, the old subscriptions stay".into());
        return r;
    }
    for d in &plan.delete {
        match client
            .delete_event_subscription(secrets, budget, &d.id)
            .await
        {
            Ok(()) => r.deleted.push(d.id.clone()),
            Err(e @ QualtricsError::Api { status: 404, .. }) => {
                tracing::info!(id = %d.id, error = %e, "subscription already gone");
                r.deleted.push(d.id.clone());
            }
            Err(e) => r.failures.push(format!("delete {}: {e}", d.id)),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://app.example.net/api/qualtrics/events?code=k1";

    fn sub(id: &str, topic: &str, url: &str) -> EventSubscription {
        EventSubscription {
            id: id.into(),
            topics: topic.into(),
            publication_url: url.into(),
        }
    }

    fn t(sid: &str) -> String {
        topic_of(sid)
    }

    fn del(id: &str, sid: &str, reason: Reason) -> Deletion {
        Deletion {
            id: id.into(),
            topic: t(sid),
            reason,
        }
    }

    #[test]
    fn plan_table() {
        let other = "https://other.example.org/hook";
        // (name, existing, wanted topics, rotate, expected plan)
        type Case = (
            &'static str,
            Vec<EventSubscription>,
            Vec<String>,
            bool,
            Plan,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing yet: create all",
                vec![],
                vec![t("SV_a"), t("SV_b")],
                false,
                Plan {
                    create: vec![t("SV_a"), t("SV_b")],
                    ..Plan::default()
                },
            ),
            (
                "up to date: nothing to do",
                vec![sub("S1", &t("SV_a"), URL)],
                vec![t("SV_a")],
                false,
                Plan {
                    keep: vec![("S1".into(), t("SV_a"))],
                    ..Plan::default()
                },
            ),
            (
                "foreign subscriptions are never touched, even for a wanted or stale topic",
                vec![
                    sub("F1", &t("SV_a"), other),
                    sub("F2", &t("SV_gone"), other),
                    sub("F3", "*", "not a url"),
                ],
                vec![t("SV_a")],
                false,
                Plan {
                    create: vec![t("SV_a")],
                    foreign: 3,
                    ..Plan::default()
                },
            ),
            (
                "stale and duplicate go; the first listed stays",
                vec![
                    sub("S1", &t("SV_a"), URL),
                    sub("S2", &t("SV_a"), URL),
                    sub("S3", &t("SV_gone"), URL),
                    sub("S4", "surveyengine.completedResponse.*", URL),
                ],
                vec![t("SV_a")],
                false,
                Plan {
                    keep: vec![("S1".into(), t("SV_a"))],
                    delete: vec![
                        del("S3", "SV_gone", Reason::Stale),
                        Deletion {
                            id: "S4".into(),
                            topic: "surveyengine.completedResponse.*".into(),
                            reason: Reason::Stale,
                        },
                        del("S2", "SV_a", Reason::Duplicate),
                    ],
                    ..Plan::default()
                },
            ),
            (
                "normalised match: case, default port, trailing slash, parameter order",
                vec![sub(
                    "S1",
                    &t("SV_a"),
                    "HTTPS://App.Example.NET:443/api/qualtrics/events/?code=k1",
                )],
                vec![t("SV_a")],
                false,
                Plan {
                    keep: vec![("S1".into(), t("SV_a"))],
                    ..Plan::default()
                },
            ),
            (
                "another path is not ours",
                vec![sub(
                    "S1",
                    &t("SV_a"),
                    "https://app.example.net/api/other?code=k1",
                )],
                vec![t("SV_a")],
                false,
                Plan {
                    create: vec![t("SV_a")],
                    foreign: 1,
                    ..Plan::default()
                },
            ),
            (
                "our endpoint with an old function key: replaced (create, then delete)",
                vec![
                    sub(
                        "S1",
                        &t("SV_a"),
                        "https://app.example.net/api/qualtrics/events?code=old",
                    ),
                    sub(
                        "S2",
                        &t("SV_gone"),
                        "https://app.example.net/api/qualtrics/events",
                    ),
                ],
                vec![t("SV_a")],
                false,
                Plan {
                    create: vec![t("SV_a")],
                    delete: vec![
                        del("S2", "SV_gone", Reason::Stale),
                        del("S1", "SV_a", Reason::OtherKey),
                    ],
                    ..Plan::default()
                },
            ),
            (
                "rotate: create every wanted topic, delete every old one of ours",
                vec![
                    sub("S1", &t("SV_a"), URL),
                    sub("S2", &t("SV_a"), URL),
                    sub("F1", &t("SV_a"), other),
                ],
                vec![t("SV_a"), t("SV_b")],
                true,
                Plan {
                    create: vec![t("SV_a"), t("SV_b")],
                    delete: vec![
                        del("S1", "SV_a", Reason::Rotated),
                        del("S2", "SV_a", Reason::Rotated),
                    ],
                    foreign: 1,
                    ..Plan::default()
                },
            ),
            (
                "a survey listed twice is wanted once",
                vec![],
                vec![t("SV_a"), t("SV_a")],
                false,
                Plan {
                    create: vec![t("SV_a")],
                    ..Plan::default()
                },
            ),
        ];
        let ours = OurUrl::parse(URL).unwrap();
        for (name, existing, wanted, rotate, want) in cases {
            assert_eq!(plan(&existing, &wanted, &ours, rotate), want, "{name}");
        }
    }

    #[test]
    fn a_url_without_a_key_keeps_any_key() {
        let ours = OurUrl::parse("https://app.example.net/api/qualtrics/events").unwrap();
        let p = plan(&[sub("S1", &t("SV_a"), URL)], &[t("SV_a")], &ours, false);
        assert!(p.is_noop(), "{p:?}");
    }

    #[test]
    fn url_rules_and_masking() {
        assert!(OurUrl::parse("http://app.example.net/x").is_err());
        assert!(OurUrl::parse("not a url").is_err());
        assert!(OurUrl::parse("http://127.0.0.1:7071/api/qualtrics/events").is_ok());
        let u = OurUrl::parse("https://a.example/api/q?x=1&code=s3cret").unwrap();
        assert_eq!(u.masked(), "https://a.example/api/q?x=1&code=***");
        assert!(!u.masked().contains("s3cret"));
        assert_eq!(mask("https://a.example/q"), "https://a.example/q");
    }
}
