//! Arbitrary HTTP requests to the webhook URL, through the host envelope into
//! `QualtricsWebhook`: form and `MSG` parsing, HMAC, workflow token, JSON body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qualtrics_bridge_fuzz::webhook_delivery(data);
});
