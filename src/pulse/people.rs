//! Who an event would survey, for `qualtrics-bridge pulses --dry-run`: [`plan`] applies
//! `PulseSender`'s own rules (its person key, blob names and cool-down test, `sender.rs`)
//! person by person, read-only: "already claimed by this event", "inside the cool-down",
//! "nobody to send to" or "due". It reads the state blobs and writes nothing.

use super::config::PulseRoute;
use super::sender::{
    cooldown_blob, identity, ledger_blob, person_key, CoolDown, MarkState, PulseEntry, CHUNK,
};
use crate::messages::{PulseEvent, PulsePerson};
use crate::storage::blob_state::{self, BlobError};
use azure_storage_blob::BlobContainerClient;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

/// How much of a person key is shown (the sender logs the same prefix).
pub const SHOWN_KEY_CHARS: usize = 12;
/// Cool-down reads a dry run keeps in flight.
const READS_AT_ONCE: usize = 16;

/// Whether the sender has somewhere to send: an address to upsert, or a contact id (`CID_…`)
/// a transaction can name (as `PulseSender` decides).
pub fn reachable(p: &PulsePerson) -> bool {
    let email = p
        .email
        .as_deref()
        .map(str::trim)
        .is_some_and(|e| e.contains('@'));
    email
        || p.contact_id
            .as_deref()
            .is_some_and(|c| crate::messages::is_qualtrics_id(c, "CID_"))
}

/// What the sender would do with one person, in the order it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Names no address, `externalRef` or contact id.
    NoIdentity,
    /// This event already claimed the person (the mark's state: claimed, added, ambiguous).
    Already(String),
    /// Another event of the category surveyed them at `since`.
    Cooling { since: String },
    /// No address and no list membership.
    Unreachable,
    /// Would be surveyed.
    Due,
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Self::NoIdentity => "no-identity",
            Self::Already(_) => "already",
            Self::Cooling { .. } => "cooling",
            Self::Unreachable => "unreachable",
            Self::Due => "due",
        }
    }
}

/// One person of the event: the shown part of their key (never the address) and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonPlan {
    /// The person's position in the event's `people`.
    pub index: usize,
    /// The first [`SHOWN_KEY_CHARS`] hex characters of the person key; `None` without identity.
    pub key: Option<String>,
    pub verdict: Verdict,
}

/// What the sender would do with the whole event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub people: Vec<PersonPlan>,
}

impl Plan {
    pub fn count(&self, name: &str) -> usize {
        self.people
            .iter()
            .filter(|p| p.verdict.name() == name)
            .count()
    }

    /// Distributions the sender would create: one per event (to its transaction batch) when
    /// anyone is due, else none.
    pub fn distributions(&self) -> usize {
        usize::from(self.count("due") > 0)
    }

    /// Transaction-batch calls for the people due: one per chunk of [`CHUNK`].
    pub fn batch_calls(&self) -> usize {
        self.count("due").div_ceil(CHUNK)
    }
}

fn mark_state_name(s: MarkState) -> &'static str {
    match s {
        MarkState::Claimed => "claimed",
        MarkState::Added => "added",
        MarkState::Ambiguous => "ambiguous",
        MarkState::Released => "released",
    }
}

/// The error of a dry run's read.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("{0}: unreadable pulse state blob")]
    Unreadable(String),
}

async fn read<T: serde::de::DeserializeOwned>(
    c: &BlobContainerClient,
    name: &str,
) -> Result<Option<T>, PlanError> {
    match blob_state::read(&c.blob_client(name), name).await? {
        None => Ok(None),
        Some((bytes, _)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| PlanError::Unreadable(name.to_owned())),
    }
}

/// What one decision reads.
struct Context<'a> {
    state: &'a BlobContainerClient,
    root: &'a [u8],
    route: &'a PulseRoute,
    ledger: Option<&'a PulseEntry>,
    ours: &'a str,
    hours: u32,
    now: OffsetDateTime,
}

impl Context<'_> {
    async fn decide(&self, index: usize, p: &PulsePerson) -> Result<PersonPlan, PlanError> {
        let Some(id) = identity(p) else {
            return Ok(PersonPlan {
                index,
                key: None,
                verdict: Verdict::NoIdentity,
            });
        };
        let key = person_key(self.root, &id);
        // A `v: 1` ledger listed its people; a `v: 2` event marks them in the cool-down blob.
        let listed = self
            .ledger
            .and_then(|l| l.people.get(&key))
            .map(|r| r.status.clone());
        let verdict = match listed {
            Some(status) => Verdict::Already(status),
            None => {
                let mark: Option<CoolDown> =
                    read(self.state, &cooldown_blob(self.route.category(), &key)).await?;
                match mark {
                    Some(m) if m.event == self.ours && m.state != MarkState::Released => {
                        Verdict::Already(mark_state_name(m.state).to_owned())
                    }
                    Some(m) if m.holds(self.ours, self.hours, self.now) => {
                        Verdict::Cooling { since: m.at }
                    }
                    _ if !reachable(p) => Verdict::Unreachable,
                    _ => Verdict::Due,
                }
            }
        };
        Ok(PersonPlan {
            index,
            key: Some(key.chars().take(SHOWN_KEY_CHARS).collect()),
            verdict,
        })
    }
}

/// Decides for every person of `event` as the sender would under `route`, reading the event
/// ledger and the cool-down marks in `state` (the state container); writes nothing.
pub async fn plan(
    state: &BlobContainerClient,
    root: &[u8],
    route: &PulseRoute,
    event: &PulseEvent,
    now: OffsetDateTime,
) -> Result<Plan, PlanError> {
    let ours = ledger_blob(&event.event_id);
    let ledger: Option<PulseEntry> = read(state, &ours).await?;
    let hours = *route.cooldown_hours.get_ref();
    let ctx = Context {
        state,
        root,
        route,
        ledger: ledger.as_ref(),
        ours: &ours,
        hours,
        now,
    };
    // Reads are independent: a handful at a time, in event order.
    let people = futures::stream::iter(event.people.iter().enumerate())
        .map(|(index, p)| ctx.decide(index, p))
        .buffered(READS_AT_ONCE)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(Plan { people })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(email: Option<&str>, ext: Option<&str>, cid: Option<&str>) -> PulsePerson {
        PulsePerson {
            email: email.map(Into::into),
            external_ref: ext.map(Into::into),
            contact_id: cid.map(Into::into),
            name: None,
            attributes: Default::default(),
        }
    }

    #[test]
    fn reachable_needs_an_address_or_a_contact_id() {
        assert!(reachable(&person(Some("a@b.c"), None, None)));
        assert!(reachable(&person(None, None, Some("CID_0123456789"))));
        assert!(!reachable(&person(None, Some("E1"), None)));
        assert!(!reachable(&person(Some("not-an-address"), None, None)));
        assert!(!reachable(&person(None, None, Some("CGC_0123456789"))));
    }

    #[test]
    fn one_distribution_per_event_and_one_batch_call_per_chunk() {
        let due = |n: usize| Plan {
            people: (0..n)
                .map(|index| PersonPlan {
                    index,
                    key: None,
                    verdict: Verdict::Due,
                })
                .collect(),
        };
        assert_eq!((due(0).distributions(), due(0).batch_calls()), (0, 0));
        assert_eq!((due(1).distributions(), due(1).batch_calls()), (1, 1));
        assert_eq!(
            (due(CHUNK + 1).distributions(), due(CHUNK + 1).batch_calls()),
            (1, 2)
        );
    }
}
