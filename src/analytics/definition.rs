//! Survey definition snapshots (`GET /API/v3/survey-definitions/{id}`), each valid from its
//! `LastModified` until the next one: a response is decoded with the snapshot valid when it was
//! recorded (definitions change; the API returns only the current one).

use super::rows::Micros;

/// One snapshot. The raw JSON is kept: definition shapes are hostile (arrays vs objects,
/// string vs int ids, `false` for objects), so it is read through tolerant accessors.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// `LastModified` as Qualtrics wrote it.
    pub version: String,
    pub valid_from: Micros,
    pub raw: serde_json::Value,
}

/// A survey's snapshots, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Definitions {
    snapshots: Vec<Definition>,
}

impl Definitions {
    pub fn new(mut snapshots: Vec<Definition>) -> Self {
        snapshots.sort_by_key(|d| d.valid_from);
        Self { snapshots }
    }

    /// The snapshot valid at `at`; a response recorded before the oldest snapshot is decoded
    /// with the oldest (the first snapshot is taken when the bridge first sees the survey, which
    /// is usually later than its first responses).
    pub fn valid_at(&self, at: Micros) -> Option<&Definition> {
        let after = self.snapshots.partition_point(|d| d.valid_from <= at);
        self.snapshots
            .get(after.wrapping_sub(1))
            .or(self.snapshots.first())
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(v: &str, at: Micros) -> Definition {
        Definition {
            version: v.into(),
            valid_from: at,
            raw: serde_json::Value::Null,
        }
    }

    #[test]
    fn picks_the_snapshot_valid_at_the_time() {
        let defs = Definitions::new(vec![def("b", 20), def("a", 10)]);
        assert_eq!(defs.valid_at(5).map(|d| d.version.as_str()), Some("a"));
        assert_eq!(defs.valid_at(10).map(|d| d.version.as_str()), Some("a"));
        assert_eq!(defs.valid_at(19).map(|d| d.version.as_str()), Some("a"));
        assert_eq!(defs.valid_at(25).map(|d| d.version.as_str()), Some("b"));
        assert!(Definitions::default().valid_at(1).is_none());
    }
}
