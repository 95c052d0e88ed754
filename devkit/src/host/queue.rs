//! Queue triggers on Azurite, with the Storage Queues extension's rules (reference §3.4):
//! base64 decoding (undecodable → poison at once), a visibility lease while running (renewed
//! at half its length, as the SDK's listener does, so only a dead host loses it), delete on
//! success, on failure a retry after `visibilityTimeout` or, at `maxDequeueCount`, a copy to
//! `<queue>-poison`; polling backs off from 100 ms to `maxPollingInterval`; at most
//! `batchSize + newBatchThreshold` invocations run at once.

use super::envelope::{queue_envelope, QueueDelivery};
use super::{utc_now, FunctionSpec, HostError, Shared};
use crate::queue_client::{QueueClient, RawMessage};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

const MIN_POLL: Duration = Duration::from_millis(100);

pub(super) async fn listen(
    shared: Arc<Shared>,
    f: FunctionSpec,
) -> Result<tokio::task::JoinHandle<()>, HostError> {
    let queue = f
        .trigger()
        .and_then(|t| t.str("queueName"))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let client = shared.storage.clone().ok_or_else(|| HostError::Function {
        function: f.name.clone(),
        reason: "queue trigger without a storage connection".into(),
    })?;
    if let Err(e) = client.create_queue(&queue).await {
        tracing::warn!(queue, error = %e, "cannot create the trigger queue yet; will keep polling");
    }
    Ok(tokio::spawn(async move {
        let opts = shared.app.host.queues.clone();
        let lease = shared.opts.queue_lease;
        let limit = (opts.batch_size + opts.new_batch_threshold).max(1) as usize;
        let slots = Arc::new(Semaphore::new(limit));
        let mut delay = MIN_POLL;
        loop {
            let free = slots.available_permits().min(opts.batch_size as usize);
            if free == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            match client.get_messages(&queue, free as u32, lease).await {
                Ok(messages) if !messages.is_empty() => {
                    delay = MIN_POLL;
                    for m in messages {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let (shared, f, client, queue) =
                            (shared.clone(), f.clone(), client.clone(), queue.clone());
                        tokio::spawn(async move {
                            process(&shared, &f, &client, &queue, m).await;
                            drop(permit);
                        });
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(queue, error = %e, "queue poll failed");
                    let _ = client.create_queue(&queue).await;
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(opts.max_polling_interval);
        }
    }))
}

fn poison_name(queue: &str) -> Option<String> {
    let name = format!("{queue}-poison");
    (!queue.ends_with("-poison") && name.len() <= 63).then_some(name)
}

/// Converts Azurite's RFC 1123 dates to the ISO form the host sends.
fn iso(rfc1123: &str) -> String {
    let parts: Vec<&str> = rfc1123.split_whitespace().collect();
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    match parts.as_slice() {
        [_, d, m, y, hms, _] => match MONTHS.iter().position(|x| x == m) {
            Some(i) => format!("{y}-{:02}-{d:0>2}T{hms}+00:00", i + 1),
            None => rfc1123.to_string(),
        },
        _ => rfc1123.to_string(),
    }
}

async fn process(
    shared: &Shared,
    f: &FunctionSpec,
    client: &QueueClient,
    queue: &str,
    m: RawMessage,
) {
    let opts = &shared.app.host.queues;
    let text = if opts.base64 {
        match STANDARD.decode(m.text.trim()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => {
                tracing::warn!(queue, id = %m.id, "message is not base64: moved to poison at once");
                poison(client, queue, &m).await;
                return;
            }
        }
    } else {
        m.text.clone()
    };
    if m.dequeue_count > opts.max_dequeue_count {
        poison(client, queue, &m).await;
        return;
    }
    let delivery = QueueDelivery {
        text,
        id: m.id.clone(),
        pop_receipt: m.pop_receipt.clone(),
        dequeue_count: m.dequeue_count,
        insertion_time: iso(&m.insertion_time),
        expiration_time: iso(&m.expiration_time),
        next_visible_time: iso(&m.next_visible_time),
    };
    let binding = f.trigger().map(|t| t.name.clone()).unwrap_or_default();
    let envelope = queue_envelope(&f.name, &binding, &delivery, &utc_now());
    let lease = shared.opts.queue_lease;
    let mut m = m;
    let outcome = {
        let invocation = shared.invoke(f, envelope, Some(m.dequeue_count));
        tokio::pin!(invocation);
        loop {
            tokio::select! {
                r = &mut invocation => break r,
                () = tokio::time::sleep(lease / 2) => {
                    match client.release_message(queue, &m.id, &m.pop_receipt, lease).await {
                        Ok(receipt) => m.pop_receipt = receipt,
                        Err(e) => tracing::warn!(queue, id = %m.id, error = %e, "lease renewal failed"),
                    }
                }
            }
        }
    };
    match outcome {
        Ok(_) => {
            if let Err(e) = client.delete_message(queue, &m.id, &m.pop_receipt).await {
                tracing::warn!(queue, id = %m.id, error = %e, "delete after success failed");
            }
        }
        Err(_) if m.dequeue_count >= opts.max_dequeue_count => poison(client, queue, &m).await,
        Err(_) => {
            if let Err(e) = client
                .release_message(queue, &m.id, &m.pop_receipt, opts.visibility_timeout)
                .await
                .map(drop)
            {
                tracing::warn!(queue, id = %m.id, error = %e, "release after failure failed");
            }
        }
    }
}

/// Copies the message body to `<queue>-poison` and deletes the original.
async fn poison(client: &QueueClient, queue: &str, m: &RawMessage) {
    let Some(target) = poison_name(queue) else {
        return;
    };
    let put = async {
        client.create_queue(&target).await?;
        client.put_message(&target, &m.text).await
    };
    match put.await {
        Ok(()) => {
            tracing::warn!(queue, poison = %target, id = %m.id, dequeue_count = m.dequeue_count, "message moved to poison");
            if let Err(e) = client.delete_message(queue, &m.id, &m.pop_receipt).await {
                tracing::warn!(queue, id = %m.id, error = %e, "delete after poison failed");
            }
        }
        Err(e) => tracing::error!(queue, id = %m.id, error = %e, "cannot move message to poison"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_poison_names() {
        assert_eq!(
            iso("Tue, 01 Dec 2026 00:00:05 GMT"),
            "2026-12-01T00:00:05+00:00"
        );
        assert_eq!(
            poison_name("ticket-requests").as_deref(),
            Some("ticket-requests-poison")
        );
        assert_eq!(poison_name("ticket-requests-poison"), None);
    }
}
