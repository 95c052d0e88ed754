//! Arbitrary bytes as the Functions host's invocation envelope, for each function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    qualtrics_bridge_fuzz::envelope(data);
});
