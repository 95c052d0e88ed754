//! Delta commits of one table, protocol `minReaderVersion 1` / `minWriterVersion 2` and no
//! newer feature (Synapse serverless reads Delta 1.0 only): version 0 = `protocol` + `metaData`
//! (append-only) + adds + `commitInfo`, later versions adds + `commitInfo`.
//!
//! Appends are blind, so a lost race for version `v` is retried at `v + 1` after reading what
//! the winner wrote (bounded). An `add` whose path the log already holds is dropped before the
//! commit, which makes a retried batch (same content-addressed names) a no-op. Every
//! `checkpoint_interval` versions a Parquet checkpoint of the table's state is written.

use super::checkpoint;
use super::log::{LastCheckpoint, Log, LogError};
use super::parquet::{AddFile, Column};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Versions attempted for one commit before giving up (each lost race reads the winner's
/// commit first; writers are a few overlapping timer runs at most).
const MAX_ATTEMPTS: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("{table}: {source}")]
    Log {
        table: String,
        #[source]
        source: LogError,
    },
    #[error("{table}: gave up after {attempts} versions were taken by other writers")]
    Contended { table: String, attempts: usize },
    #[error("{table}: checkpoint {version}: {reason}")]
    Checkpoint {
        table: String,
        version: u64,
        reason: String,
    },
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Created this version.
    Version(u64),
    /// Every add was already in the log (a retried batch) and the table exists.
    AlreadyLogged,
}

/// The table's current state, as far as appends need it.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `None`: the table does not exist yet.
    pub version: Option<u64>,
    protocol: Option<Value>,
    metadata: Option<Value>,
    /// Path → its `add` action.
    adds: BTreeMap<String, Value>,
}

impl Snapshot {
    pub fn contains(&self, path: &str) -> bool {
        self.adds.contains_key(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.adds.keys().map(String::as_str)
    }

    fn apply(&mut self, action: &Value) {
        if let Some(add) = action.get("add") {
            if let Some(path) = add.get("path").and_then(Value::as_str) {
                self.adds.insert(path.to_owned(), add.clone());
            }
        } else if let Some(path) = action
            .get("remove")
            .and_then(|r| r.get("path"))
            .and_then(Value::as_str)
        {
            self.adds.remove(path);
        } else if let Some(p) = action.get("protocol") {
            self.protocol = Some(p.clone());
        } else if let Some(m) = action.get("metaData") {
            self.metadata = Some(m.clone());
        }
    }

    fn apply_lines(&mut self, name: &str, bytes: &[u8]) -> Result<(), LogError> {
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: Value = serde_json::from_slice(line).map_err(|e| LogError::Corrupt {
                blob: name.to_owned(),
                reason: e.to_string(),
            })?;
            self.apply(&action);
        }
        Ok(())
    }

    /// Reads the log from `_last_checkpoint` forward.
    pub async fn load(log: &Log) -> Result<Self, LogError> {
        let mut s = Self::default();
        if let Some(LastCheckpoint { version, .. }) = log.last_checkpoint().await? {
            let bytes = log.read_checkpoint(version).await?;
            for action in checkpoint::actions(&bytes).map_err(|reason| LogError::Corrupt {
                blob: format!(
                    "{}/_delta_log/{version:020}.checkpoint.parquet",
                    log.table()
                ),
                reason,
            })? {
                s.apply(&action);
            }
            s.version = Some(version);
        }
        s.advance(log).await?;
        Ok(s)
    }

    /// Applies every commit after `self.version`.
    async fn advance(&mut self, log: &Log) -> Result<(), LogError> {
        let mut next = self.version.map_or(0, |v| v + 1);
        while let Some(bytes) = log.read_version(next).await? {
            self.apply_lines(&format!("{}@{next}", log.table()), &bytes)?;
            self.version = Some(next);
            next += 1;
        }
        Ok(())
    }

    /// The state as checkpoint actions: protocol, metaData, then every add.
    fn actions(&self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.adds.len() + 2);
        out.extend(self.protocol.iter().map(|p| json!({ "protocol": p })));
        out.extend(self.metadata.iter().map(|m| json!({ "metaData": m })));
        out.extend(self.adds.values().map(|a| json!({ "add": a })));
        out
    }
}

/// The Delta `schemaString` of a table's columns.
pub fn schema_string(columns: &[Column]) -> String {
    let fields: Vec<Value> = columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.kind.delta(), "nullable": c.nullable, "metadata": {}}))
        .collect();
    json!({"type": "struct", "fields": fields}).to_string()
}

/// Appends data files to one table.
#[derive(Debug, Clone)]
pub struct Committer {
    log: Log,
    columns: &'static [Column],
    checkpoint_interval: u64,
    engine: String,
}

impl Committer {
    pub fn new(log: Log, columns: &'static [Column], checkpoint_interval: u64) -> Self {
        Self {
            log,
            columns,
            checkpoint_interval: checkpoint_interval.max(1),
            engine: format!("qualtrics-bridge/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    fn err(&self, source: LogError) -> CommitError {
        CommitError::Log {
            table: self.log.table().to_owned(),
            source,
        }
    }

    /// Commits `adds` (their files already uploaded) at the next free version; creates the
    /// table (version 0) when it does not exist, even with no add. `now_ms` stamps the actions.
    pub async fn commit(&self, adds: &[AddFile], now_ms: i64) -> Result<Committed, CommitError> {
        let mut snap = Snapshot::load(&self.log).await.map_err(|e| self.err(e))?;
        for _ in 0..MAX_ATTEMPTS {
            let new: Vec<&AddFile> = adds.iter().filter(|a| !snap.contains(&a.path)).collect();
            let v = match snap.version {
                Some(_) if new.is_empty() => return Ok(Committed::AlreadyLogged),
                Some(v) => v + 1,
                None => 0,
            };
            let actions = self.actions(v, &new, now_ms);
            let mut body = Vec::new();
            for a in &actions {
                body.extend_from_slice(a.to_string().as_bytes());
                body.push(b'\n');
            }
            match self.log.write_version(v, Bytes::from(body)).await {
                Ok(()) => {
                    for a in &actions {
                        snap.apply(a);
                    }
                    snap.version = Some(v);
                    if v > 0 && v.is_multiple_of(self.checkpoint_interval) {
                        // The commit stands either way; a missing checkpoint only means
                        // readers replay more JSON until the next one.
                        if let Err(e) = self.checkpoint(v, &snap).await {
                            tracing::warn!(table = self.log.table(), version = v, error = %e, "checkpoint not written");
                        }
                    }
                    return Ok(Committed::Version(v));
                }
                Err(LogError::VersionTaken(_)) => {
                    snap.advance(&self.log).await.map_err(|e| self.err(e))?;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        Err(CommitError::Contended {
            table: self.log.table().to_owned(),
            attempts: MAX_ATTEMPTS,
        })
    }

    fn actions(&self, v: u64, adds: &[&AddFile], now_ms: i64) -> Vec<Value> {
        let mut out = Vec::with_capacity(adds.len() + 3);
        if v == 0 {
            out.push(json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}));
            out.push(json!({"metaData": {
                "id": uuid::Uuid::new_v4().to_string(),
                "format": {"provider": "parquet", "options": {}},
                "schemaString": schema_string(self.columns),
                "partitionColumns": [],
                "configuration": {"delta.appendOnly": "true"},
                "createdTime": now_ms,
            }}));
        }
        for a in adds {
            out.push(json!({"add": {
                "path": a.path,
                "partitionValues": {},
                "size": a.size,
                "modificationTime": now_ms,
                "dataChange": true,
                "stats": a.stats.to_json().to_string(),
            }}));
        }
        out.push(json!({"commitInfo": {
            "timestamp": now_ms,
            "operation": if v == 0 { "CREATE TABLE" } else { "WRITE" },
            "operationParameters": {"mode": "Append"},
            "isBlindAppend": true,
            "engineInfo": self.engine,
        }}));
        out
    }

    async fn checkpoint(&self, v: u64, snap: &Snapshot) -> Result<(), CommitError> {
        let actions = snap.actions();
        let failed = |reason: String| CommitError::Checkpoint {
            table: self.log.table().to_owned(),
            version: v,
            reason,
        };
        let parquet = checkpoint::to_parquet(&actions).map_err(failed)?;
        self.log
            .write_checkpoint(v, parquet, actions.len() as u64)
            .await
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::parquet::{Kind, Stats};
    use std::sync::Arc;

    const COLS: &[Column] = &[
        Column {
            name: "a",
            kind: Kind::Utf8,
            nullable: false,
        },
        Column {
            name: "t",
            kind: Kind::Timestamp,
            nullable: true,
        },
    ];

    fn committer() -> Committer {
        // Never talks to storage in these tests.
        let url = azure_core::http::Url::parse("http://127.0.0.1:1/acct").unwrap();
        let svc = azure_storage_blob::BlobServiceClient::new(url, None, None).unwrap();
        Committer::new(
            Log::new(Arc::new(svc.blob_container_client("c")), "t1"),
            COLS,
            10,
        )
    }

    fn add(path: &str) -> AddFile {
        AddFile {
            path: path.into(),
            size: 10,
            rows: 2,
            stats: Stats {
                num_records: 2,
                ..Default::default()
            },
        }
    }

    #[test]
    fn version_zero_declares_protocol_1_2_append_only_and_nothing_newer() {
        let c = committer();
        let a = add("p1");
        let actions = c.actions(0, &[&a], 1_700_000_000_000);
        assert_eq!(
            actions[0],
            json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}})
        );
        let meta = &actions[1]["metaData"];
        assert_eq!(meta["configuration"], json!({"delta.appendOnly": "true"}));
        assert_eq!(meta["partitionColumns"], json!([]));
        let schema: Value = serde_json::from_str(meta["schemaString"].as_str().unwrap()).unwrap();
        assert_eq!(schema["fields"][1]["type"], "timestamp");
        assert_eq!(schema["fields"][0]["nullable"], false);
        assert_eq!(actions[2]["add"]["path"], "p1");
        let stats: Value =
            serde_json::from_str(actions[2]["add"]["stats"].as_str().unwrap()).unwrap();
        assert_eq!(stats["numRecords"], 2);
        assert!(actions[3].get("commitInfo").is_some());
        let later = c.actions(1, &[&a], 1);
        assert!(later[0].get("add").is_some() && later.len() == 2);
        assert!(!serde_json::to_string(&actions)
            .unwrap()
            .contains("readerFeatures"));
    }

    #[test]
    fn checkpoint_round_trips_the_state() {
        let c = committer();
        let mut snap = Snapshot::default();
        let (a, b) = (add("p1"), add("p2"));
        for action in c.actions(0, &[&a, &b], 5) {
            snap.apply(&action);
        }
        let actions = snap.actions();
        assert_eq!(actions.len(), 4);
        let parquet = checkpoint::to_parquet(&actions).unwrap();
        let back = checkpoint::actions(&parquet).unwrap();
        let mut again = Snapshot::default();
        for action in &back {
            again.apply(action);
        }
        assert_eq!(again.protocol, snap.protocol);
        assert_eq!(again.metadata, snap.metadata);
        assert_eq!(again.adds, snap.adds);
    }
}
