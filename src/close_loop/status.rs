//! One ticket's loop as operators see it (`qualtrics-bridge loop status`): the ticket ledger
//! entry of its response, the loop ledger entry `LoopCloser` keeps, and whether `TicketSync`
//! still has it in the open-ticket index. Read only: every read goes through the ledgers' own
//! types, nothing is written.

use super::ledger::{FollowUpStatus, LoopEntry, LoopLedger};
use crate::storage::blob_state::BlobError;
use crate::storage::{Storage, StorageError};
use crate::tickets::ledger::{Entry, Ledger, LedgerError};
use crate::tickets::open::{OpenIndex, OpenTicket};
use azure_storage_blob::BlobContainerClient;

/// How many blobs a by-number scan reads at once (a handful keeps it near one read's latency).
const SCAN_PAGE: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Tickets(#[from] LedgerError),
    #[error(transparent)]
    Loop(#[from] super::ledger::LedgerError),
    #[error(transparent)]
    Index(#[from] BlobError),
}

/// Everything stored about one response's ticket and its loop.
#[derive(Debug, Clone)]
pub struct LoopStatus {
    pub survey_id: String,
    pub response_id: String,
    /// The ticket ledger entry (`tickets/{surveyId}/{responseId}.json`), when there is one.
    pub ticket: Option<Entry>,
    /// `(system, ticket id)`, from whichever ledger knows it.
    pub ticket_id: Option<(String, String)>,
    /// The loop ledger entry (`loop/{system}/{ticketId}.json`): `None` before the first event.
    pub loop_entry: Option<LoopEntry>,
    /// The open-ticket index entry: `Some` while `TicketSync` still watches the ticket.
    pub open: Option<OpenTicket>,
}

/// Whether the applied state is on the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteBackStatus {
    /// No state applied yet.
    None,
    /// The ledger records the applied state as written.
    Applied,
    /// A newer state is applied than the one written (a retry is due, or under way).
    Pending,
}

impl WriteBackStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Applied => "applied",
            Self::Pending => "pending",
        }
    }
}

/// The write-back state of `entry`, by the rule `LoopCloser` uses: the written
/// `(changedAt, sequence)` equals the applied one.
pub fn write_back_status(entry: &LoopEntry) -> WriteBackStatus {
    match (&entry.applied, &entry.write_back) {
        (None, _) => WriteBackStatus::None,
        (Some(a), Some(w)) if w.key() == a.key() => WriteBackStatus::Applied,
        (Some(_), _) => WriteBackStatus::Pending,
    }
}

/// The follow-up in one word, with the distribution id when it was sent (`sent EMD_…`).
pub fn follow_up_text(entry: &LoopEntry) -> String {
    let f = &entry.follow_up;
    match (f.status, &f.distribution_id) {
        (FollowUpStatus::Sent, Some(d)) => format!("sent {d}"),
        (s, _) => follow_up_name(s).to_owned(),
    }
}

pub fn follow_up_name(s: FollowUpStatus) -> &'static str {
    match s {
        FollowUpStatus::None => "none",
        FollowUpStatus::Claimed => "claimed",
        FollowUpStatus::Sent => "sent",
        FollowUpStatus::Skipped => "skipped",
        FollowUpStatus::Ambiguous => "ambiguous",
    }
}

/// The ledgers in the app's state container.
pub struct StatusReader {
    tickets: Ledger,
    loops: LoopLedger,
    open: OpenIndex,
    container: BlobContainerClient,
}

impl std::fmt::Debug for StatusReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusReader")
    }
}

impl StatusReader {
    /// The ledgers in `storage`'s state container `name` (`STATE_CONTAINER`).
    pub fn new(storage: &Storage, name: &str) -> Result<Self, StorageError> {
        Ok(Self {
            tickets: Ledger::new(storage.blob_container(name)?, name),
            loops: LoopLedger::new(storage.blob_container(name)?),
            open: OpenIndex::new(storage.blob_container(name)?),
            container: storage.blob_container(name)?,
        })
    }

    /// The loop of `response_id`, looked up in each of `surveys` in turn (the ticket ledger is
    /// keyed by survey); `None` when no survey has a ticket ledger entry for it.
    pub async fn by_response(
        &self,
        surveys: &[String],
        response_id: &str,
    ) -> Result<Option<LoopStatus>, StatusError> {
        for survey in surveys {
            let blob = Ledger::blob_name(survey, response_id);
            let Some((entry, _)) = self.tickets.get(&blob).await? else {
                continue;
            };
            let ticket_id = entry
                .ticket
                .as_ref()
                .map(|t| (t.system.clone(), t.id.clone()));
            let mut status = LoopStatus {
                survey_id: survey.clone(),
                response_id: response_id.to_owned(),
                ticket: Some(entry),
                ticket_id: ticket_id.clone(),
                loop_entry: None,
                open: None,
            };
            if let Some((system, id)) = ticket_id {
                self.fill(&mut status, &system, &id).await?;
            }
            return Ok(Some(status));
        }
        Ok(None)
    }

    /// The loop of a ticket given by its id (Zendesk id, ServiceNow `sys_id`) or number
    /// (`INC…`). An id is two reads; a number that is not an id is found by scanning that
    /// system's open-ticket index and loop ledger (one read per entry). `None` when neither
    /// knows the ticket.
    pub async fn by_ticket(
        &self,
        system: &str,
        id_or_number: &str,
    ) -> Result<Option<LoopStatus>, StatusError> {
        let found = match self.direct(system, id_or_number).await? {
            Some(found) => Some(found),
            None => self.scan(system, id_or_number).await?,
        };
        let Some((id, survey, response)) = found else {
            return Ok(None);
        };
        let blob = Ledger::blob_name(&survey, &response);
        let ticket = self.tickets.get(&blob).await?.map(|(e, _)| e);
        let mut status = LoopStatus {
            survey_id: survey,
            response_id: response,
            ticket,
            ticket_id: Some((system.to_owned(), id.clone())),
            loop_entry: None,
            open: None,
        };
        self.fill(&mut status, system, &id).await?;
        Ok(Some(status))
    }

    async fn fill(&self, s: &mut LoopStatus, system: &str, id: &str) -> Result<(), StatusError> {
        let blob = LoopLedger::blob_name(system, id);
        s.loop_entry = self.loops.get(&blob).await?.map(|(e, _)| e);
        s.open = self.open.get(system, id).await?;
        Ok(())
    }

    /// `(ticket id, survey, response)` when `id` is a ticket id either ledger knows.
    async fn direct(
        &self,
        system: &str,
        id: &str,
    ) -> Result<Option<(String, String, String)>, StatusError> {
        let blob = LoopLedger::blob_name(system, id);
        if let Some((e, _)) = self.loops.get(&blob).await? {
            return Ok(Some((id.to_owned(), e.survey_id, e.response_id)));
        }
        Ok(self
            .open
            .get(system, id)
            .await?
            .map(|o| (id.to_owned(), o.survey_id, o.response_id)))
    }

    /// Finds the ticket numbered `number`: first among the open tickets, then in the loop
    /// ledger (tickets that left the index have a loop entry: only a terminal state, which
    /// `LoopCloser` records, takes them out).
    async fn scan(
        &self,
        system: &str,
        number: &str,
    ) -> Result<Option<(String, String, String)>, StatusError> {
        let mut marker: Option<String> = None;
        loop {
            let page = self.open.page(system, marker.as_deref(), SCAN_PAGE).await?;
            if let Some(l) = page
                .entries
                .into_iter()
                .find(|l| l.entry.number.as_deref() == Some(number))
            {
                return Ok(Some((l.ticket_id, l.entry.survey_id, l.entry.response_id)));
            }
            match page.next {
                Some(next) => marker = Some(next),
                None => break,
            }
        }
        let names =
            crate::storage::blob_state::names(&self.container, &format!("loop/{system}/")).await?;
        for name in names {
            if let Some((e, _)) = self.loops.get(&name).await? {
                if e.ticket_number.as_deref() == Some(number) {
                    return Ok(Some((e.ticket_id, e.survey_id, e.response_id)));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close_loop::ledger::{Applied, FollowUpRecord, WriteBack};
    use crate::messages::TicketState;

    fn entry() -> LoopEntry {
        LoopEntry {
            v: 1,
            system: "servicenow".into(),
            ticket_id: "abc".into(),
            ticket_number: Some("INC0010001".into()),
            survey_id: "SV_1".into(),
            response_id: "R_1".into(),
            applied: None,
            resolved_at: None,
            reopened_at: None,
            write_back: None,
            follow_up: FollowUpRecord::default(),
            json_events: Vec::new(),
            ignored: 0,
            updated_at: "2026-12-07T10:00:00Z".into(),
        }
    }

    #[test]
    fn write_back_is_applied_only_for_the_applied_state() {
        let mut e = entry();
        assert_eq!(write_back_status(&e), WriteBackStatus::None);
        e.applied = Some(Applied {
            state: TicketState::Resolved,
            status: "6".into(),
            changed_at: "2026-12-07T10:00:00Z".into(),
            sequence: Some(3),
            close_code: None,
            event_id: None,
            reopened: false,
        });
        assert_eq!(write_back_status(&e), WriteBackStatus::Pending);
        let written = |seq| WriteBack {
            changed_at: "2026-12-07T10:00:00Z".into(),
            sequence: Some(seq),
            state: "resolved".into(),
            at: "2026-12-07T10:00:01Z".into(),
        };
        e.write_back = Some(written(2));
        assert_eq!(write_back_status(&e), WriteBackStatus::Pending);
        e.write_back = Some(written(3));
        assert_eq!(write_back_status(&e), WriteBackStatus::Applied);
    }

    #[test]
    fn follow_up_names_the_distribution_when_sent() {
        let mut e = entry();
        assert_eq!(follow_up_text(&e), "none");
        e.follow_up.status = FollowUpStatus::Sent;
        e.follow_up.distribution_id = Some("EMD_1".into());
        assert_eq!(follow_up_text(&e), "sent EMD_1");
        e.follow_up.status = FollowUpStatus::Ambiguous;
        assert_eq!(follow_up_text(&e), "ambiguous");
    }
}
