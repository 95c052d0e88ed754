//! Operator view of the poison queues (`ticket-requests-poison`, `loop-requests-poison`): list
//! what is parked there (with the ledger's reason) and replay messages to their trigger queue
//! byte-exact. A replayed message is put on the trigger queue before it is deleted from the
//! poison queue, so a crash in between can only duplicate it — which the ticket and loop
//! ledgers make harmless — never lose it.

use crate::messages::{LoopRequest, TicketRequest};
use crate::storage::Storage;
use azure_storage_queue::models::{
    QueueClientPeekMessagesOptions, QueueClientReceiveMessagesOptions, QueueMessage,
};
use azure_storage_queue::QueueClient;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

pub const TRIGGER_QUEUE: &str = "ticket-requests";
pub const POISON_QUEUE: &str = "ticket-requests-poison";

/// Which poison queue: `TicketCreator`'s or `LoopCloser`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Queue {
    #[default]
    Tickets,
    Loop,
}

impl Queue {
    pub fn trigger(self) -> &'static str {
        match self {
            Self::Tickets => TRIGGER_QUEUE,
            Self::Loop => crate::close_loop::TRIGGER_QUEUE,
        }
    }

    pub fn poison(self) -> &'static str {
        match self {
            Self::Tickets => POISON_QUEUE,
            Self::Loop => crate::close_loop::POISON_QUEUE,
        }
    }
}
/// How long a message being replayed stays hidden from other readers.
const REPLAY_LEASE_SECS: i32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum PoisonError {
    #[error("queue {queue}: {op} failed: {}", crate::storage::Cause(source))]
    Queue {
        queue: &'static str,
        op: &'static str,
        #[source]
        source: azure_core::Error,
    },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// One parked message.
#[derive(Debug, Clone)]
pub struct Parked {
    pub message_id: String,
    pub inserted: String,
    pub dequeue_count: i64,
    /// The raw `MessageText` (base64 of the request text under the host's encoding).
    pub raw: String,
    /// The decoded request (a ticket or loop request, by queue), when it is one.
    pub request: Option<serde_json::Value>,
    /// What the request is about, in a few words (ids, source or state).
    pub about: Option<String>,
    /// The ledger's state and reason for this request, when there is a ledger entry.
    pub ledger: Option<String>,
}

impl Parked {
    /// The decoded message text, as the trigger would deliver it.
    pub fn text(&self) -> String {
        STANDARD
            .decode(self.raw.trim())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| format!("<not base64: {} bytes>", self.raw.len()))
    }
}

fn queue_err(
    queue: &'static str,
    op: &'static str,
) -> impl FnOnce(azure_core::Error) -> PoisonError {
    move |source| PoisonError::Queue { queue, op, source }
}

/// Lists up to `limit` (at most 32: a peek's limit) parked messages, oldest first.
pub async fn list(storage: &Storage, which: Queue, limit: u32) -> Result<Vec<Parked>, PoisonError> {
    let poison = which.poison();
    let queue = storage.queue(poison)?;
    if !queue.exists().await.map_err(queue_err(poison, "exists"))? {
        return Ok(Vec::new());
    }
    let options = QueueClientPeekMessagesOptions {
        number_of_messages: Some(limit.clamp(1, 32) as i32),
        ..Default::default()
    };
    let peeked = queue
        .peek_messages(Some(options))
        .await
        .map_err(queue_err(poison, "peek"))?
        .into_model()
        .map_err(queue_err(poison, "peek"))?;
    let mut out = Vec::new();
    for m in peeked.items.unwrap_or_default() {
        let mut parked = Parked {
            message_id: m.message_id.unwrap_or_default(),
            inserted: m.insertion_time.map(|t| t.to_string()).unwrap_or_default(),
            dequeue_count: m.dequeue_count.unwrap_or_default(),
            raw: m.message_text.unwrap_or_default(),
            request: None,
            about: None,
            ledger: None,
        };
        let text = parked.text();
        let blob = match which {
            Queue::Tickets => TicketRequest::parse(&text).ok().map(|r| {
                parked.about = Some(format!(
                    "{}/{} ({:?})",
                    r.survey_id, r.response_id, r.source
                ));
                parked.request = serde_json::to_value(&r).ok();
                format!("tickets/{}/{}.json", r.survey_id, r.response_id)
            }),
            Queue::Loop => LoopRequest::parse(&text).ok().map(|r| {
                parked.about = Some(format!(
                    "{} {} → {}/{} ({:?} at {})",
                    r.system, r.ticket_id, r.survey_id, r.response_id, r.state, r.changed_at
                ));
                parked.request = serde_json::to_value(&r).ok();
                format!("loop/{}/{}.json", r.system, r.ticket_id)
            }),
        };
        if let Some(blob) = blob {
            parked.ledger = ledger_summary(storage, &blob).await;
        }
        out.push(parked);
    }
    Ok(out)
}

/// `state: reason` from a ticket ledger entry, or the applied state and follow-up of a loop
/// ledger entry, if any.
async fn ledger_summary(storage: &Storage, blob: &str) -> Option<String> {
    let container = crate::env::setting("STATE_CONTAINER").unwrap_or_else(|| "bridge-state".into());
    let blob = storage.blob_container(&container).ok()?.blob_client(blob);
    let text = blob
        .download(None)
        .await
        .ok()?
        .body
        .collect_string()
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if let Some(applied) = v.get("applied") {
        let follow = &v["followUp"];
        return Some(format!(
            "applied {} at {}; follow-up {}{}",
            applied["state"].as_str().unwrap_or("?"),
            applied["changedAt"].as_str().unwrap_or("?"),
            follow["status"].as_str().unwrap_or("none"),
            follow["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    let state = v.get("state")?.as_str()?.to_string();
    Some(match v.get("reason").and_then(|r| r.as_str()) {
        Some(reason) => format!("{state}: {reason}"),
        None => state,
    })
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Message ids moved back to the trigger queue (or that would be, on a dry run).
    pub moved: Vec<String>,
}

/// Moves up to `limit` messages from the poison queue back to its trigger queue, byte-exact.
/// With `dry_run`, only lists what would move (peek, at most 32).
pub async fn replay(
    storage: &Storage,
    which: Queue,
    limit: u32,
    dry_run: bool,
) -> Result<ReplayReport, PoisonError> {
    let (trigger, poison_name) = (which.trigger(), which.poison());
    let mut report = ReplayReport::default();
    if dry_run {
        report.moved = list(storage, which, limit)
            .await?
            .into_iter()
            .map(|p| p.message_id)
            .collect();
        return Ok(report);
    }
    let poison = storage.queue(poison_name)?;
    if !poison
        .exists()
        .await
        .map_err(queue_err(poison_name, "exists"))?
    {
        return Ok(report);
    }
    let target = storage.queue(trigger)?;
    ensure_queue(&target, trigger).await?;
    while (report.moved.len() as u32) < limit {
        let want = (limit - report.moved.len() as u32).min(32) as i32;
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(want),
            visibility_timeout: Some(REPLAY_LEASE_SECS),
            ..Default::default()
        };
        let batch = poison
            .receive_messages(Some(options))
            .await
            .map_err(queue_err(poison_name, "receive"))?
            .into_model()
            .map_err(queue_err(poison_name, "receive"))?
            .items
            .unwrap_or_default();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let (Some(id), Some(receipt)) = (m.message_id, m.pop_receipt) else {
                continue;
            };
            let message = QueueMessage {
                message_text: Some(m.message_text.unwrap_or_default()),
            };
            target
                .send_message(
                    message.try_into().map_err(queue_err(trigger, "encode"))?,
                    None,
                )
                .await
                .map_err(queue_err(trigger, "send"))?;
            poison
                .delete_message(&id, &receipt, None)
                .await
                .map_err(queue_err(poison_name, "delete"))?;
            report.moved.push(id);
        }
    }
    Ok(report)
}

async fn ensure_queue(queue: &QueueClient, name: &'static str) -> Result<(), PoisonError> {
    if !queue.exists().await.map_err(queue_err(name, "exists"))? {
        queue
            .create(None)
            .await
            .map_err(queue_err(name, "create"))?;
    }
    Ok(())
}
