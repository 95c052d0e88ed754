//! SharedKey request signing as an azure_core pipeline [`Policy`] (the new SDK has none).
//! The signing rules live in `storage_auth::SharedKeySigner`, shared with devkit.

use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use std::sync::Arc;
use storage_auth::SharedKeySigner;

/// Adds `x-ms-date` and `Authorization: SharedKey …` to every try. Put it in
/// `ClientOptions::per_try_policies`: those run after the SDK's own per-try policies, just
/// before logging and the transport, so every header it signs is final.
#[derive(Debug, Clone)]
pub struct SharedKeyPolicy {
    signer: SharedKeySigner,
}

impl SharedKeyPolicy {
    pub fn new(signer: SharedKeySigner) -> Arc<Self> {
        Arc::new(Self { signer })
    }
}

#[async_trait::async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        request.insert_header(
            "x-ms-date",
            storage_auth::http_date(std::time::SystemTime::now()),
        );
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect();
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // reqwest sets Content-Length from the body after this policy; sign the same number.
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .or_else(|| request.body().len().map(|l| l as usize))
            .unwrap_or(0);
        let method = request.method();
        let authorization =
            self.signer
                .authorization(method.as_ref(), request.url(), &refs, length);
        request.insert_header("authorization", authorization);
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "SharedKeyPolicy must not be the last policy in the pipeline",
            )),
        }
    }
}
