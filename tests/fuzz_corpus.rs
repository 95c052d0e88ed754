//! Replays the committed fuzz corpus (`fuzz/corpus/`) through the same invariant checks the
//! `cargo fuzz` targets run, on the stable toolchain: every input the fuzzer ever kept stays
//! a regression test, and the corpus must keep reaching the interesting outcomes.
//!
//! A test binary of its own because the harness sets the webhook secrets in the process
//! environment (`tests/webhook_props.rs` sets different ones).

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn replay<T>(target: &str, run: impl Fn(&[u8]) -> T + std::panic::RefUnwindSafe) -> Vec<T> {
    corpus(target)
        .into_iter()
        .map(|(path, bytes)| {
            std::panic::catch_unwind(|| run(&bytes))
                .unwrap_or_else(|_| panic!("corpus input {} violates an invariant", path.display()))
        })
        .collect()
}

#[test]
fn webhook_delivery_corpus_holds_and_reaches_every_outcome() {
    let outcomes = replay("webhook_delivery", harness::webhook_delivery);
    let seen: BTreeSet<(u16, bool)> = outcomes.iter().map(|o| (o.status, o.queued)).collect();
    for want in [
        (202, true),  // signed (both public vectors), workflow token, allowed unsigned
        (202, false), // ignored: not Complete, survey without tickets, unknown survey
        (200, false), // GET
        (400, false),
        (401, false),
        (405, false),
        (415, false),
    ] {
        assert!(
            seen.contains(&want),
            "no corpus input answers {want:?}; seen {seen:?}"
        );
    }
}

#[test]
fn envelope_corpus_holds_and_decodes_for_every_function() {
    let outcomes = replay("envelope", harness::envelope);
    assert!(outcomes.iter().any(|o| o.webhook), "no HTTP envelope");
    assert!(outcomes.iter().any(|o| o.tickets), "no queue envelope");
    assert!(outcomes.iter().any(|o| o.export), "no timer envelope");
    assert!(
        outcomes
            .iter()
            .any(|o| !o.webhook && !o.tickets && !o.export),
        "no undecodable envelope"
    );
}
