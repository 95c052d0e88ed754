//! Contract between the handler (src/config.rs KNOWN_SETTINGS), the function bindings
//! (functions/*/function.json), the docs (docs/settings.md) and the Bicep (infra/).
//! Plain string parsing only; every assertion names what is wrong and where.

use qualtrics_bridge::config::{SettingSource, KNOWN_SETTINGS};
use qualtrics_bridge::functions::Function;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Each queue-triggered function's trigger queue and dead-letter queue (DESIGN's contract).
const QUEUE_FUNCTIONS: &[(&str, &str, &str)] = &[
    ("TicketCreator", "ticket-requests", "ticket-requests-poison"),
    ("LoopCloser", "loop-requests", "loop-requests-poison"),
    ("PulseSender", "pulse-requests", "pulse-requests-poison"),
];
/// Queues only written to (their reader is not built yet).
const OUTPUT_ONLY_QUEUES: &[&str] = &[];
const EXPORT_CONTAINER: &str = "qualtrics-exports";
const STATE_CONTAINER: &str = "bridge-state";

/// App settings the Bicep may set that the handler does not read (the host reads them).
const HOST_ONLY_SETTINGS: &[&str] = &[
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir` whose name ends with one of `exts`, sorted.
fn files_with_ext(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                if exts.iter().any(|ext| name.ends_with(ext)) {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out
}

fn bicep_files() -> Vec<(PathBuf, String)> {
    let files = files_with_ext(&root().join("infra"), &[".bicep", ".bicepparam"]);
    assert!(
        files.iter().any(|p| p.ends_with("infra/main.bicep")),
        "infra/main.bicep is missing (found: {files:?})"
    );
    files
        .into_iter()
        .map(|p| {
            let t = read(&p);
            (p, t)
        })
        .collect()
}

/// Strips a `// comment` tail (outside single-quoted strings) and surrounding blanks.
fn code_part(line: &str) -> &str {
    let mut in_str = false;
    let bytes = line.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'\'' => in_str = !in_str,
            b'/' if !in_str && i + 1 < bytes.len() && bytes[i + 1] == b'/' => {
                return line[..i].trim()
            }
            _ => {}
        }
    }
    line.trim()
}

/// The single-quoted literal after `key:` on a line like `name: 'X'`, if the line is exactly that.
fn quoted_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = code_part(line)
        .strip_prefix(key)?
        .trim_start()
        .strip_prefix(':')?
        .trim();
    let inner = rest.strip_prefix('\'')?.strip_suffix('\'')?;
    (!inner.contains('\'') && !inner.contains("${")).then_some(inner)
}

/// App-setting names declared in Bicep: a `name: 'X'` line directly followed by a `value:` line
/// (the `{ name, value }` shape of siteConfig.appSettings).
fn bicep_app_settings(files: &[(PathBuf, String)]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, text) in files {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(name) = quoted_value(line, "name") {
                let next = lines[i + 1..]
                    .iter()
                    .map(|l| code_part(l))
                    .find(|l| !l.is_empty());
                if next.is_some_and(|l| l.starts_with("value:")) {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names
}

/// All single-quoted literals that appear in the Bicep code (comments excluded).
fn bicep_literals(files: &[(PathBuf, String)]) -> BTreeSet<String> {
    let mut lits = BTreeSet::new();
    for (_, text) in files {
        for line in text.lines() {
            let code = code_part(line);
            let mut parts = code.split('\'');
            parts.next();
            while let Some(inside) = parts.next() {
                lits.insert(inside.to_string());
                if parts.next().is_none() {
                    break;
                }
            }
        }
    }
    lits
}

fn function_jsons() -> Vec<(String, serde_json::Value)> {
    let dir = root().join("functions");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
    {
        let path = entry.expect("entry").path().join("function.json");
        // Nothing else: the host would ignore a stray file, and a folder without
        // function.json is a function that never runs.
        assert!(
            path.is_file(),
            "{} has no function.json: functions/ holds only function folders",
            path.parent().unwrap_or(&dir).display()
        );
        {
            let name = path
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let json: serde_json::Value = serde_json::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
            out.push((name, json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let mut registered: Vec<&str> = Function::ALL.iter().map(|f| f.spec().name).collect();
    registered.sort_unstable();
    assert_eq!(
        out.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        registered,
        "functions/ must hold exactly one folder per function in src/functions.rs (Function::ALL)"
    );
    out
}

fn bindings(json: &serde_json::Value) -> &Vec<serde_json::Value> {
    json["bindings"]
        .as_array()
        .expect("function.json has a `bindings` array")
}

/// Every registered function has its folder, whose one `in` binding is the trigger and input
/// its `SPEC` declares (the handler reads the trigger's payload under that name).
#[test]
fn each_registered_function_has_its_function_json_with_its_trigger() {
    let jsons = function_jsons();
    for f in Function::ALL {
        let spec = f.spec();
        let (_, json) = jsons
            .iter()
            .find(|(n, _)| n == spec.name)
            .unwrap_or_else(|| panic!("functions/{}/function.json is missing", spec.name));
        let inputs: Vec<_> = bindings(json)
            .iter()
            .filter(|b| b["direction"] == "in")
            .collect();
        assert_eq!(
            inputs.len(),
            1,
            "functions/{}/function.json: exactly one `in` binding expected",
            spec.name
        );
        assert_eq!(
            (inputs[0]["type"].as_str(), inputs[0]["name"].as_str()),
            (Some(spec.trigger.binding_type()), Some(spec.input)),
            "functions/{}/function.json: the `in` binding differs from the function's SPEC",
            spec.name
        );
    }
}

#[test]
fn every_deployment_setting_is_set_by_the_bicep() {
    let files = bicep_files();
    let set = bicep_app_settings(&files);
    let missing: Vec<&str> = KNOWN_SETTINGS
        .iter()
        .filter(|s| s.source == SettingSource::Deployment)
        .map(|s| s.name)
        .filter(|n| !set.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "KNOWN_SETTINGS marks {missing:?} as Deployment, but no Bicep app setting `name: '…'` sets them \
         (app settings found in infra/: {set:?})"
    );
}

#[test]
fn bicep_sets_no_unknown_or_platform_settings() {
    let set = bicep_app_settings(&bicep_files());
    for name in &set {
        let known = KNOWN_SETTINGS.iter().find(|s| s.name == name);
        match known {
            Some(spec) => assert!(
                spec.source != SettingSource::Platform,
                "the Bicep sets {name}, which KNOWN_SETTINGS says the platform provides: remove it from infra/"
            ),
            None => assert!(
                HOST_ONLY_SETTINGS.contains(&name.as_str()),
                "the Bicep sets app setting {name}, which the handler never reads (not in KNOWN_SETTINGS) \
                 and is not a known host setting: a typo, or add it to src/config.rs"
            ),
        }
    }
    assert!(
        !set.contains("AzureWebJobsStorage"),
        "the Bicep sets a plain AzureWebJobsStorage: in Azure storage is identity-based \
         (AzureWebJobsStorage__accountName/__credential); a connection string (even empty) breaks Flex"
    );
    for forbidden in [
        "APPINSIGHTS_INSTRUMENTATIONKEY",
        "FUNCTIONS_WORKER_RUNTIME",
        "WEBSITE_RUN_FROM_PACKAGE",
    ] {
        assert!(
            !set.contains(forbidden),
            "the Bicep sets {forbidden}, which must not be used on Flex Consumption"
        );
    }
}

#[test]
fn every_setting_and_default_is_documented() {
    let path = root().join("docs/settings.md");
    let doc = read(&path);
    let rows: Vec<&str> = doc
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .collect();
    for spec in KNOWN_SETTINGS {
        let cell = format!("`{}`", spec.name);
        let row = rows
            .iter()
            .find(|r| r.split('|').nth(1).is_some_and(|c| c.trim() == cell));
        let row = row.unwrap_or_else(|| {
            panic!(
                "{} has no table row in {} (first column must be {cell})",
                spec.name,
                path.display()
            )
        });
        if let SettingSource::Default(default) = spec.source {
            let want = format!("`{default}`");
            assert!(
                row.contains(&want),
                "{}: the row for {} does not document its default {want} (row: {row})",
                path.display(),
                spec.name
            );
        }
    }
}

#[test]
fn queues_and_containers_agree_with_function_json_and_design() {
    let files = bicep_files();
    let lits = bicep_literals(&files);
    let set = bicep_app_settings(&files);

    let mut queues = BTreeSet::new();
    for (func, json) in function_jsons() {
        for b in bindings(&json) {
            if let Some(q) = b["queueName"].as_str() {
                queues.insert(q.to_string());
                assert_eq!(
                    b["connection"].as_str(),
                    Some("AzureWebJobsStorage"),
                    "functions/{func}/function.json: queue binding `{}` must use connection AzureWebJobsStorage \
                     (the only storage connection the Bicep configures)",
                    b["name"]
                );
            }
            // %SETTING% references are resolved by the host from app settings: the Bicep must set them.
            for (key, value) in b.as_object().expect("binding is an object") {
                if let Some(s) = value.as_str() {
                    if let Some(inner) = s.strip_prefix('%').and_then(|r| r.strip_suffix('%')) {
                        assert!(
                            set.contains(inner),
                            "functions/{func}/function.json `{key}` uses %{inner}%, but the Bicep does not set app setting {inner}"
                        );
                    }
                }
            }
            let kind = b["type"].as_str().unwrap_or_default();
            let contract = QUEUE_FUNCTIONS.iter().find(|(f, _, _)| *f == func);
            if kind == "queueTrigger" {
                let (_, trigger, _) = contract.unwrap_or_else(|| {
                    panic!("functions/{func}: a queue trigger DESIGN does not list")
                });
                assert_eq!(
                    b["queueName"].as_str(),
                    Some(*trigger),
                    "functions/{func}: the queue trigger must read {trigger}"
                );
            }
            if kind == "queue" && b["name"] == "deadletter" {
                let poison = contract.map_or("-", |c| c.2);
                assert_eq!(
                    b["queueName"].as_str(),
                    Some(poison),
                    "functions/{func}: deadletter must write {poison}"
                );
            }
        }
    }
    let want: BTreeSet<String> = QUEUE_FUNCTIONS
        .iter()
        .flat_map(|(_, t, p)| [t.to_string(), p.to_string()])
        .chain(OUTPUT_ONLY_QUEUES.iter().map(|q| q.to_string()))
        .collect();
    assert_eq!(
        queues, want,
        "queues named in functions/*/function.json differ from DESIGN.md's"
    );

    for q in &queues {
        assert!(
            lits.contains(q),
            "queue {q} (from function.json) is not declared in the Bicep as '{q}'"
        );
    }
    for c in [EXPORT_CONTAINER, STATE_CONTAINER] {
        assert!(
            lits.contains(c),
            "blob container {c} (DESIGN.md) is not declared in the Bicep as '{c}'"
        );
    }
    // The handler's container defaults must match what the Bicep creates.
    for (setting, container) in [
        ("EXPORT_CONTAINER", EXPORT_CONTAINER),
        ("STATE_CONTAINER", STATE_CONTAINER),
    ] {
        let spec = KNOWN_SETTINGS.iter().find(|s| s.name == setting);
        match spec.map(|s| s.source) {
            Some(SettingSource::Default(d)) => {
                assert_eq!(d, container, "KNOWN_SETTINGS default of {setting} differs from the container the Bicep creates")
            }
            Some(SettingSource::Deployment) => {
                assert!(
                    set.contains(setting),
                    "{setting} is a Deployment setting but the Bicep does not set it"
                )
            }
            other => panic!(
                "{setting} should have a default of {container} in KNOWN_SETTINGS, found {other:?}"
            ),
        }
    }
}

#[test]
fn no_storage_keys_anywhere_in_the_bicep() {
    for (path, text) in bicep_files() {
        let lower = text.to_ascii_lowercase();
        for needle in [
            "accountkey=",
            "listkeys(",
            "sharedaccesssignature=",
            "instrumentationkey=",
        ] {
            assert!(
                !lower.contains(needle),
                "{} contains `{needle}`: no key or key-bearing connection string may appear in infra/",
                path.display()
            );
        }
    }
    let all: String = bicep_files().into_iter().map(|(_, t)| t).collect();
    assert!(
        all.contains("allowSharedKeyAccess: false"),
        "the storage account must set allowSharedKeyAccess: false"
    );
    assert!(
        all.contains("name: 'custom'") && all.contains("version: '1.0'"),
        "functionAppConfig.runtime must be name 'custom', version '1.0' (flex-bicep.md §2.2)"
    );
}
