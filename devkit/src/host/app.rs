//! Reads an app root the way the host does: `host.json` (with `AzureFunctionsJobHost__…`
//! overrides from the settings), immediate sub-folders holding `function.json`, the name
//! rules, and `%SETTING%` expressions in bindings.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("setting {0} referenced by a binding is not set")]
    MissingSetting(String),
}

/// App settings (the `Values` of local.settings.json, or the test's environment).
pub type Settings = BTreeMap<String, String>;

/// `customHandler` and the extension settings of `host.json` that the local host honours.
#[derive(Debug, Clone)]
pub struct HostJson {
    pub executable: PathBuf,
    pub arguments: Vec<String>,
    pub working_directory: PathBuf,
    pub enable_forwarding: bool,
    pub route_prefix: String,
    pub queues: QueueOptions,
    pub function_timeout: Duration,
}

/// `extensions.queues` with the Storage Queues extension's defaults.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub max_polling_interval: Duration,
    pub visibility_timeout: Duration,
    pub batch_size: u32,
    pub new_batch_threshold: u32,
    pub max_dequeue_count: u32,
    pub base64: bool,
}

/// A binding of a function.json, with `%SETTING%` already resolved.
#[derive(Debug, Clone)]
pub struct Binding {
    pub kind: String,
    pub direction: String,
    pub name: String,
    pub raw: Value,
}

impl Binding {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.raw.get(key).and_then(Value::as_str)
    }
}

/// What the host discovered in one function folder.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub name: String,
    pub bindings: Vec<Binding>,
}

impl FunctionSpec {
    pub fn trigger(&self) -> Option<&Binding> {
        self.bindings
            .iter()
            .find(|b| b.direction == "in" && b.kind.ends_with("Trigger"))
    }

    pub fn outputs(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter().filter(|b| b.direction == "out")
    }
}

/// A loaded app root.
#[derive(Debug, Clone)]
pub struct App {
    pub root: PathBuf,
    pub host: HostJson,
    pub functions: Vec<FunctionSpec>,
}

impl App {
    pub fn load(root: &Path, settings: &Settings) -> Result<Self, AppError> {
        let host_path = root.join("host.json");
        let mut host_json = read_json(&host_path)?;
        apply_overrides(&mut host_json, settings);
        let host = parse_host(&host_path, &host_json)?;
        let mut functions = Vec::new();
        let entries = std::fs::read_dir(root).map_err(|e| AppError::Read {
            path: root.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("function.json").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let path = dir.join("function.json");
            if !valid_function_name(&name) {
                return Err(AppError::Invalid {
                    path,
                    reason: format!("function name {name:?} breaks the host's naming rule"),
                });
            }
            let json = read_json(&path)?;
            let bindings = parse_bindings(&path, &json, settings)?;
            functions.push(FunctionSpec { name, bindings });
        }
        Ok(Self {
            root: root.to_path_buf(),
            host,
            functions,
        })
    }

    pub fn function(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
}

fn read_json(path: &Path) -> Result<Value, AppError> {
    let text = std::fs::read_to_string(path).map_err(|e| AppError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| AppError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `AzureFunctionsJobHost__a__b=v` overrides `host.json`'s `a.b`, as app settings do in Azure.
fn apply_overrides(json: &mut Value, settings: &Settings) {
    for (k, v) in settings {
        let Some(path) = k.strip_prefix("AzureFunctionsJobHost__") else {
            continue;
        };
        let mut node = &mut *json;
        let parts: Vec<&str> = path.split("__").collect();
        for (i, part) in parts.iter().enumerate() {
            let Some(obj) = node.as_object_mut() else {
                break;
            };
            let key = obj
                .keys()
                .find(|k| k.eq_ignore_ascii_case(part))
                .cloned()
                .unwrap_or_else(|| part.to_string());
            if i + 1 == parts.len() {
                obj.insert(key, Value::String(v.clone()));
                break;
            }
            node = obj
                .entry(key)
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |node, key| {
        node.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn parse_host(path: &Path, v: &Value) -> Result<HostJson, AppError> {
    let invalid = |reason: String| AppError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let executable = get(
        v,
        &["customHandler", "description", "defaultExecutablePath"],
    )
    .and_then(Value::as_str)
    .ok_or_else(|| invalid("customHandler.description.defaultExecutablePath is required".into()))?;
    let arguments = get(v, &["customHandler", "description", "arguments"])
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let working_directory = get(v, &["customHandler", "description", "workingDirectory"])
        .and_then(Value::as_str)
        .unwrap_or("");
    let flag = |key: &str| {
        get(v, &["customHandler", key])
            .is_some_and(|b| b.as_bool() == Some(true) || b.as_str() == Some("true"))
    };
    let q = |key: &str| get(v, &["extensions", "queues", key]);
    let span = |key: &str, default: Duration| -> Result<Duration, AppError> {
        match q(key).and_then(Value::as_str) {
            None => Ok(default),
            Some(s) => parse_timespan(s).ok_or_else(|| {
                invalid(format!("extensions.queues.{key}: {s:?} is not a TimeSpan"))
            }),
        }
    };
    let num = |key: &str, default: u32| -> u32 {
        q(key)
            .and_then(|n| n.as_u64().or_else(|| n.as_str()?.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(default)
    };
    let batch_size = num("batchSize", 16).clamp(1, 32);
    let timeout = match get(v, &["functionTimeout"]).and_then(Value::as_str) {
        Some("-1") => Duration::from_secs(24 * 3600),
        Some(s) => parse_timespan(s)
            .ok_or_else(|| invalid(format!("functionTimeout {s:?} is not a TimeSpan")))?,
        None => Duration::from_secs(30 * 60),
    };
    Ok(HostJson {
        executable: PathBuf::from(executable),
        arguments,
        working_directory: PathBuf::from(working_directory),
        enable_forwarding: flag("enableForwardingHttpRequest") || flag("enableProxyingHttpRequest"),
        route_prefix: get(v, &["extensions", "http", "routePrefix"])
            .and_then(Value::as_str)
            .unwrap_or("api")
            .trim_matches('/')
            .to_string(),
        queues: QueueOptions {
            max_polling_interval: span("maxPollingInterval", Duration::from_secs(60))?
                .max(Duration::from_millis(100)),
            visibility_timeout: span("visibilityTimeout", Duration::ZERO)?,
            batch_size,
            new_batch_threshold: num("newBatchThreshold", batch_size / 2),
            max_dequeue_count: num("maxDequeueCount", 5).max(1),
            base64: q("messageEncoding")
                .and_then(Value::as_str)
                .is_none_or(|e| !e.eq_ignore_ascii_case("none")),
        },
        function_timeout: timeout,
    })
}

/// .NET TimeSpan `[d.]hh:mm:ss[.fff]`.
pub fn parse_timespan(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (days, rest) = match s.split_once('.') {
        Some((d, r)) if !d.contains(':') => (d.parse::<u64>().ok()?, r),
        _ => (0, s),
    };
    let mut parts = rest.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || m >= 60 || !(0.0..60.0).contains(&sec) {
        return None;
    }
    Some(Duration::from_secs(days * 86_400 + h * 3600 + m * 60) + Duration::from_secs_f64(sec))
}

fn valid_function_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && !name.eq_ignore_ascii_case("host")
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn valid_binding_name(name: &str) -> bool {
    let mut chars = name.chars();
    name == "$return"
        || (name.len() <= 128
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric()))
}

fn parse_bindings(
    path: &Path,
    json: &Value,
    settings: &Settings,
) -> Result<Vec<Binding>, AppError> {
    let invalid = |reason: String| AppError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let list = json
        .get("bindings")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no bindings array".into()))?;
    let mut out = Vec::new();
    for b in list {
        let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let name = s("name");
        if !valid_binding_name(&name) {
            return Err(invalid(format!(
                "binding name {name:?} breaks the host's naming rule"
            )));
        }
        let mut raw = b.clone();
        if let Some(obj) = raw.as_object_mut() {
            for v in obj.values_mut() {
                if let Value::String(text) = v {
                    *text = resolve_settings(text, settings)?;
                }
            }
        }
        out.push(Binding {
            kind: s("type"),
            direction: s("direction"),
            name,
            raw,
        });
    }
    Ok(out)
}

/// Replaces each `%NAME%` with the setting's value.
pub fn resolve_settings(text: &str, settings: &Settings) -> Result<String, AppError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let Some(len) = rest[start + 1..].find('%') else {
            break;
        };
        let name = &rest[start + 1..start + 1 + len];
        let value = settings
            .get(name)
            .ok_or_else(|| AppError::MissingSetting(name.to_string()))?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("00:00:02"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_timespan("1.00:00:00"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_timespan("00:00:00.5"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_timespan("2s"), None);
    }

    #[test]
    fn setting_expressions_resolve_or_name_the_missing_setting() {
        let mut s = Settings::new();
        s.insert("EXPORT_SCHEDULE".into(), "0 */5 * * * *".into());
        assert_eq!(
            resolve_settings("%EXPORT_SCHEDULE%", &s).unwrap(),
            "0 */5 * * * *"
        );
        assert_eq!(
            resolve_settings("%NOPE%", &s).unwrap_err().to_string(),
            "setting NOPE referenced by a binding is not set"
        );
    }

    #[test]
    fn names_follow_the_host_rules() {
        assert!(valid_function_name("QualtricsWebhook"));
        assert!(!valid_function_name("host"));
        assert!(!valid_function_name("1abc"));
        assert!(valid_binding_name("tickets"));
        assert!(!valid_binding_name("out_msg"));
    }

    #[test]
    fn app_settings_override_host_json() {
        let mut v =
            serde_json::json!({"extensions": {"queues": {"visibilityTimeout": "00:00:30"}}});
        let mut s = Settings::new();
        s.insert(
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout".into(),
            "00:00:00".into(),
        );
        apply_overrides(&mut v, &s);
        assert_eq!(v["extensions"]["queues"]["visibilityTimeout"], "00:00:00");
    }
}
