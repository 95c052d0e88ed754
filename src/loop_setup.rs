//! `qualtrics-bridge loop setup zendesk|servicenow`: what an operator creates on each ticket
//! system so that its status changes reach `TicketEvents` (`docs/close-loop.md`). Print only:
//! nothing is sent, and no key or secret is ever printed (placeholders stand for them).

use crate::close_loop::events::{System, ZENDESK_STATUS_CHANGED};
use url::Url;

/// Stands for the function key in what is printed; the operator substitutes it.
pub const FUNCTION_KEY_PLACEHOLDER: &str = "<function key of TicketEvents>";
/// In [`SERVICENOW_RULE`], replaced by the endpoint.
const ENDPOINT_MARK: &str = "{{ENDPOINT}}";

/// The ServiceNow business rule (table `incident`, after update): the body the bridge parses,
/// signed as Zendesk signs (reference `close-the-loop.md` §3.4, with the bridge's headers).
/// `docs/close-loop.md` shows the same script; a test keeps the two equal.
pub const SERVICENOW_RULE: &str = r#"// Business rule "qualtrics-bridge: ticket events" on table incident.
// When: after, Update. Advanced. Condition:
//   current.getValue('correlation_id') && current.getValue('correlation_id').indexOf('qualtrics:') == 0 && (current.state.changesTo(6) || current.state.changesTo(7) || current.state.changesFrom(6))
// System properties: x_bridge.hmac_secret (password2: the servicenow-webhook-secret value),
// x_bridge.function_key (password2: the TicketEvents function key).
(function executeRule(current, previous) {
  var body = JSON.stringify({
    v: 1, system: 'servicenow',
    sys_id: current.getUniqueValue(), number: current.getValue('number'),
    state: current.getValue('state'), previous_state: previous.getValue('state'),
    close_code: current.getValue('close_code'),
    correlation_id: current.getValue('correlation_id'),
    sys_updated_on: current.getValue('sys_updated_on'),
    sys_mod_count: current.getValue('sys_mod_count')
  });
  // GlideDateTime's value is UTC "yyyy-MM-dd HH:mm:ss": sent as RFC 3339.
  var ts = new GlideDateTime().getValue().replace(' ', 'T') + 'Z';
  var secret = gs.getProperty('x_bridge.hmac_secret');
  // generateMac takes the key base64-encoded: the MAC is keyed with the secret's own bytes.
  var sig = new CertificateEncryption().generateMac(gs.base64Encode(secret), 'HmacSHA256', ts + body);
  var rm = new sn_ws.RESTMessageV2();
  rm.setEndpoint('{{ENDPOINT}}');
  rm.setHttpMethod('post');
  rm.setRequestHeader('Content-Type', 'application/json');
  rm.setRequestHeader('x-functions-key', gs.getProperty('x_bridge.function_key'));
  rm.setRequestHeader('X-Bridge-Timestamp', ts);
  rm.setRequestHeader('X-Bridge-Signature', sig);
  rm.setRequestBody(body);
  rm.executeAsync();
})(current, previous);
"#;

/// `--url` is not this app's base URL.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--url: not a URL")]
    Parse,
    #[error("--url: use https (http only for loopback)")]
    Scheme,
    #[error("--url: give the app's base URL only (no path, query or key)")]
    NotBase,
}

/// `https://<app>/api/tickets/{system}/events` from the app's base URL.
pub fn endpoint(app_url: &str, system: System) -> Result<String, SetupError> {
    let url = Url::parse(app_url.trim()).map_err(|_| SetupError::Parse)?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => return Err(SetupError::Parse),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(SetupError::Scheme),
    }
    // A key in the URL would be printed; a path would be a guess at the route prefix.
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(SetupError::NotBase);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SetupError::NotBase);
    }
    let base = url.as_str().trim_end_matches('/');
    Ok(format!("{base}/api/tickets/{}/events", system.name()))
}

/// The body of `POST /api/v2/webhooks`: events mode, status changes only, the function key as
/// an `api_key` header (the host checks it for `authLevel: function`).
pub fn zendesk_webhook(endpoint: &str) -> serde_json::Value {
    serde_json::json!({"webhook": {
        "name": "qualtrics-bridge ticket events",
        "endpoint": endpoint,
        "http_method": "POST",
        "request_format": "json",
        "status": "active",
        "subscriptions": [ZENDESK_STATUS_CHANGED],
        "authentication": {
            "type": "api_key",
            "data": {"name": "x-functions-key", "value": FUNCTION_KEY_PLACEHOLDER},
            "add_position": "header"
        }
    }})
}

/// What `loop setup` prints for `system`.
pub fn instructions(app_url: &str, system: System) -> Result<String, SetupError> {
    let endpoint = endpoint(app_url, system)?;
    Ok(match system {
        System::Zendesk => {
            let body = serde_json::to_string_pretty(&zendesk_webhook(&endpoint))
                .unwrap_or_default();
            format!(
                "# 1. Create the webhook (Zendesk Admin Center > Webhooks, or the API):\n\
                 POST https://<subdomain>.zendesk.com/api/v2/webhooks\n{body}\n\n\
                 # 2. Read its signing secret and store it in Key Vault as zendesk-webhook-secret\n\
                 #    (during a rotation, the old one as zendesk-webhook-secret-previous):\n\
                 GET https://<subdomain>.zendesk.com/api/v2/webhooks/<webhook id>/signing_secret\n\
                 az keyvault secret set --vault-name <vault> --name zendesk-webhook-secret --file <file with the secret>\n"
            )
        }
        System::Servicenow => format!(
            "# 1. Store a random secret in Key Vault as servicenow-webhook-secret, and the same value\n\
             #    in the ServiceNow system property x_bridge.hmac_secret.\n\
             # 2. Create this business rule (System Definition > Business Rules):\n{}",
            SERVICENOW_RULE.replace(ENDPOINT_MARK, &endpoint)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_the_route_of_each_system() {
        assert_eq!(
            endpoint("https://my-app.azurewebsites.net/", System::Zendesk).unwrap(),
            "https://my-app.azurewebsites.net/api/tickets/zendesk/events"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:7071", System::Servicenow).unwrap(),
            "http://127.0.0.1:7071/api/tickets/servicenow/events"
        );
        for bad in [
            "my-app.azurewebsites.net",
            "http://my-app.azurewebsites.net",
            "https://my-app.azurewebsites.net/api/tickets/zendesk/events",
            "https://my-app.azurewebsites.net/?code=abc",
            "https://user:pw@my-app.azurewebsites.net",
            "ftp://localhost",
        ] {
            assert!(endpoint(bad, System::Zendesk).is_err(), "{bad}");
        }
    }

    #[test]
    fn zendesk_webhook_is_events_mode_with_the_function_key_header() {
        let text = instructions("https://a.example", System::Zendesk).unwrap();
        let v = zendesk_webhook("https://a.example/api/tickets/zendesk/events");
        assert_eq!(
            v["webhook"]["subscriptions"],
            serde_json::json!(["zen:event-type:ticket.status_changed"])
        );
        assert_eq!(
            v["webhook"]["authentication"]["data"]["name"],
            "x-functions-key"
        );
        assert!(text.contains(&serde_json::to_string_pretty(&v).unwrap()));
    }

    #[test]
    fn servicenow_rule_has_the_endpoint_and_the_bridge_headers() {
        let text = instructions("https://a.example", System::Servicenow).unwrap();
        assert!(text.contains("rm.setEndpoint('https://a.example/api/tickets/servicenow/events');"));
        assert!(!text.contains(ENDPOINT_MARK));
        for h in [
            "X-Bridge-Timestamp",
            "X-Bridge-Signature",
            "x-functions-key",
        ] {
            assert!(text.contains(h), "{h}");
        }
    }

    /// The docs show the script the command prints.
    #[test]
    fn docs_show_the_same_rule() {
        let doc = include_str!("../docs/close-loop.md");
        let shown = SERVICENOW_RULE.replace(
            ENDPOINT_MARK,
            "https://<app>.azurewebsites.net/api/tickets/servicenow/events",
        );
        assert!(
            doc.contains(&shown),
            "docs/close-loop.md differs from SERVICENOW_RULE"
        );
    }
}
