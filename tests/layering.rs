//! The module layering of `src/` (docs: `/work/shared/reference/style.md` §2, §5): state
//! belongs to its capability, and only the composition modules know the configuration file,
//! the function registry and start-up. Scans every `crate::…` path in `src/**/*.rs` (test
//! modules, which start at `#[cfg(test)]`, are exempt) and fails on an edge the rules below
//! forbid, or on a module they do not classify.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Reads `bridge.toml`, lists the functions, starts the handler or runs a command: the only
/// modules that may import each other freely.
const COMPOSITION: &[&str] = &["cli", "config", "functions", "startup"];
/// A capability: its own state, built from its config slice and `deps`.
const CAPABILITIES: &[&str] = &[
    "analytics",
    "close_loop",
    "export",
    "pulse",
    "tickets",
    "webhook",
];
/// Operator commands' helpers: may use capabilities' pure types, never composition.
const OPERATIONS: &[&str] = &["loop_setup", "poison", "progress", "subscriptions"];
/// Shared clients and leaves every capability may use; they import no capability.
const SHARED: &[&str] = &[
    "clock",
    "deps",
    "env",
    "fault",
    "host",
    "identity",
    "json",
    "messages",
    "qualtrics",
    "redelivery",
    "retry_after",
    "secrets",
    "storage",
    "swar",
    "telemetry",
];
/// Capability -> capability edges, each to pure types only (a new one is a design decision:
/// list it here with the reason).
const CAPABILITY_EDGES: &[(&str, &str)] = &[
    // A ticket event is matched to its response through the ticket ledger (read only) and
    // TicketSync reads the open-ticket index and the ticket systems' clients that `tickets` owns.
    ("close_loop", "tickets"),
    // `ticket_link` is derived from the ticket ledger and the loop ledger: AnalyticsBuilder
    // lists and reads them through their own modules (`Ledger::list`/`get`,
    // `LoopLedger::list`/`get`) instead of parsing their blobs itself. Neither imports
    // analytics: TicketCreator and LoopCloser do not know the tables exist.
    ("analytics", "tickets"),
    ("analytics", "close_loop"),
];

/// `src/a/b.rs` -> `a`; `src/a.rs` -> `a`.
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::x` (and `use crate::{x, y::…}`) module `x` named outside comments and tests.
fn imports(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    // Module names are snake_case; a type inside a nested group (`{a::{B, C}}`) is not one.
    let ident = |s: &str| -> String {
        let name: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.starts_with(|c: char| c.is_ascii_lowercase()) {
            name
        } else {
            String::new()
        }
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            for item in group.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn walk(dir: &Path, root: &Path, graph: &mut BTreeMap<String, BTreeSet<String>>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, root, graph);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under src");
            let text = fs::read_to_string(&path).expect("readable source");
            let module = module_of(rel);
            let edges = graph.entry(module.clone()).or_default();
            edges.extend(imports(&text).into_iter().filter(|m| *m != module));
        }
    }
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    walk(&root, &root, &mut graph);
    // The crate roots declare the modules; they are not layers.
    graph.remove("lib");
    graph.remove("main");
    graph
}

/// Why `from -> to` is forbidden, if it is.
fn violation(from: &str, to: &str) -> Option<&'static str> {
    let is = |set: &[&str], m: &str| set.contains(&m);
    if is(COMPOSITION, from) {
        return None;
    }
    if is(COMPOSITION, to) {
        return Some(
            "only cli, config, functions and startup may import config, functions, startup or cli",
        );
    }
    if is(CAPABILITIES, from) && is(CAPABILITIES, to) && !CAPABILITY_EDGES.contains(&(from, to)) {
        return Some("a capability never imports another capability (list a pure-type edge in CAPABILITY_EDGES)");
    }
    if is(SHARED, from) && (is(CAPABILITIES, to) || is(OPERATIONS, to)) {
        return Some("shared clients and leaves never import a capability or an operator command");
    }
    if is(SHARED, from) && from != "deps" && to == "deps" {
        return Some("deps builds the shared clients, so they never import it");
    }
    if from == "env" {
        return Some("env is the leaf every module reads settings through: it imports nothing");
    }
    None
}

#[test]
fn the_scanner_sees_every_form_of_import() {
    let text = "use crate::a::B;\nuse crate::{b, c::D, e::{F, G}};\nfn f() { crate::d::x(); }\n// crate::comment\n#[cfg(test)]\nmod tests { use crate::t; }\n";
    let want: BTreeSet<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
    assert_eq!(imports(text), want);
}

#[test]
fn every_module_is_classified() {
    let all: Vec<&str> = [COMPOSITION, CAPABILITIES, OPERATIONS, SHARED].concat();
    for module in graph().keys() {
        assert!(
            all.contains(&module.as_str()),
            "src/{module}: unclassified module; add it to one layer in tests/layering.rs"
        );
    }
}

#[test]
fn no_module_imports_across_its_layer() {
    let mut bad = Vec::new();
    for (from, edges) in graph() {
        for to in edges {
            if let Some(why) = violation(&from, &to) {
                bad.push(format!("{from} -> {to}: {why}"));
            }
        }
    }
    assert!(bad.is_empty(), "forbidden imports:\n{}", bad.join("\n"));
}

#[test]
fn the_rules_catch_the_edges_they_name() {
    assert!(violation("webhook", "config").is_some());
    assert!(violation("tickets", "startup").is_some());
    assert!(violation("export", "functions").is_some());
    assert!(violation("export", "tickets").is_some());
    assert!(violation("secrets", "webhook").is_some());
    assert!(violation("qualtrics", "deps").is_some());
    assert!(violation("functions", "webhook").is_none());
    assert!(violation("webhook", "secrets").is_none());
    assert!(violation("tickets", "deps").is_none());
}
