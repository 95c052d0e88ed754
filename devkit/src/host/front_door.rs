//! The HTTP front door: `/{routePrefix}/{route}` for HTTP functions with key checks, and
//! `POST /admin/functions/{name}` to run a non-HTTP function on demand.

use super::envelope::{http_envelope, IncomingHttp};
use super::reply::http_result;
use super::{timer, utc_now, Shared};
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;

/// Largest request body the front door reads (the Functions limit is 100 MB).
const MAX_BODY: usize = 100 * 1024 * 1024;

pub(super) async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let router = Router::new().fallback(handle).with_state(shared);
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "front door stopped");
    }
}

fn key_from(headers: &HeaderMap, query: &[(String, String)]) -> Option<String> {
    headers
        .get("x-functions-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            query
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("code"))
                .map(|(_, v)| v.clone())
        })
}

/// Matches a route template against a request path, a segment at a time and ignoring case,
/// as ASP.NET routing does: `{name}` (or `{name:constraint}`, the constraint unchecked) takes
/// any one non-empty segment. The route values, or `None` when the path does not match.
fn match_route(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let (mut want, mut got) = (
        template.trim_matches('/').split('/'),
        path.trim_matches('/').split('/'),
    );
    let mut params = Vec::new();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {
                let name = w[1..w.len() - 1].split(':').next().unwrap_or_default();
                let value = percent_encoding::percent_decode_str(g)
                    .decode_utf8()
                    .ok()?
                    .into_owned();
                params.push((name.to_string(), value));
            }
            (Some(w), Some(g)) if w.eq_ignore_ascii_case(g) => {}
            _ => return None,
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let key = key_from(&parts.headers, &query);
    let is_master = key.as_deref() == Some(shared.opts.master_key.as_str());

    if let Some(name) = path.strip_prefix("/admin/functions/") {
        if !is_master {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if parts.method != axum::http::Method::POST {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        return match timer::fire_now(&shared, name).await {
            Ok(_) => StatusCode::ACCEPTED.into_response(),
            Err(e) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
        };
    }

    if shared.restarting() {
        // Azure's front end while the host is down: no function runs.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "Function host is not running.",
        )
            .into_response();
    }
    let prefix = format!("/{}/", shared.app.host.route_prefix);
    let Some(route) = path
        .strip_prefix(prefix.as_str())
        .map(|r| r.trim_end_matches('/'))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let function = shared.app.functions.iter().find_map(|f| {
        let t = f.trigger().filter(|t| t.kind == "httpTrigger")?;
        let params = match_route(t.str("route").unwrap_or(&f.name), route)?;
        Some((f, params))
    });
    let Some((f, params)) = function else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(trigger) = f.trigger() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let methods: Vec<String> = trigger
        .raw
        .get("methods")
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str())
                .map(str::to_ascii_uppercase)
                .collect()
        })
        .unwrap_or_default();
    if !methods.is_empty() && !methods.contains(&parts.method.as_str().to_ascii_uppercase()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let auth_level = match trigger
        .str("authLevel")
        .unwrap_or("function")
        .to_ascii_lowercase()
        .as_str()
    {
        "anonymous" => {
            if is_master {
                "Admin"
            } else {
                "Anonymous"
            }
        }
        "admin" if is_master => "Admin",
        "admin" => return StatusCode::UNAUTHORIZED.into_response(),
        _ if is_master => "Admin",
        _ if key.as_deref() == Some(shared.opts.function_key.as_str()) => "Function",
        _ => return StatusCode::UNAUTHORIZED.into_response(),
    };
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let incoming = IncomingHttp {
        method: parts.method.as_str().to_string(),
        url: format!(
            "http://{host}{}",
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        ),
        query,
        params,
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        auth_level,
    };
    let binding = trigger.name.clone();
    let envelope = http_envelope(&f.name, &binding, &incoming, &utc_now());
    let f = f.clone();
    match shared.invoke(&f, envelope, None).await {
        Ok(reply) => {
            let out_binding = f
                .outputs()
                .find(|b| b.kind == "http")
                .map(|b| b.name.clone())
                .unwrap_or_else(|| "$return".into());
            let r = http_result(&reply.outputs, &out_binding, true);
            let mut resp = Response::builder().status(r.status);
            for (k, v) in &r.headers {
                resp = resp.header(k.as_str(), v.as_str());
            }
            resp.body(Body::from(r.body))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        // A failed JSON-mode invocation reaches the caller as 500 with an empty body.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::match_route;

    #[test]
    fn templated_routes_match_one_segment_per_value() {
        let t = "tickets/{system}/events";
        assert_eq!(
            match_route(t, "tickets/zendesk/events"),
            Some(vec![("system".into(), "zendesk".into())])
        );
        assert_eq!(
            match_route(t, "Tickets/Jira/Events/"),
            Some(vec![("system".into(), "Jira".into())])
        );
        assert_eq!(match_route(t, "tickets//events"), None);
        assert_eq!(match_route(t, "tickets/a/b/events"), None);
        assert_eq!(match_route(t, "tickets/zendesk"), None);
        assert_eq!(
            match_route("qualtrics/events", "QUALTRICS/events"),
            Some(vec![])
        );
        assert_eq!(match_route("qualtrics/events", "qualtrics/events/x"), None);
    }
}
