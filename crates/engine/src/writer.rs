//! The audit writer: one thread that owns the order of the audit chain and
//! writes records in batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use stepgate_audit::Entry;
use stepgate_store::Store;
use tokio::sync::oneshot;

/// The audit trail could not be written; the gateway fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("audit trail unavailable: the record could not be written")]
pub struct AuditUnavailable;

/// A wait for one audit record to become durable.
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<Result<u64, AuditUnavailable>>);

impl Receipt {
    /// Waits until the record is committed; returns its sequence number.
    pub async fn wait(self) -> Result<u64, AuditUnavailable> {
        self.0.await.unwrap_or(Err(AuditUnavailable))
    }

    /// Blocks the current thread until the record is committed. Do not call
    /// from an async task.
    pub fn wait_blocking(self) -> Result<u64, AuditUnavailable> {
        self.0.blocking_recv().unwrap_or(Err(AuditUnavailable))
    }
}

struct Job {
    entry: Entry,
    ack: Option<oneshot::Sender<Result<u64, AuditUnavailable>>>,
}

/// The sending side of the audit writer.
#[derive(Clone)]
pub struct AuditSink {
    sender: Sender<Job>,
    healthy: Arc<AtomicBool>,
    queued: Arc<AtomicU64>,
}

impl AuditSink {
    /// Queues a record and returns a receipt that resolves when it is durable.
    pub fn durable(&self, entry: Entry) -> Receipt {
        let (ack, receipt) = oneshot::channel();
        self.send(Job {
            entry,
            ack: Some(ack),
        });
        Receipt(receipt)
    }

    /// Queues a record to be written with the next batch.
    pub fn behind(&self, entry: Entry) {
        self.send(Job { entry, ack: None });
    }

    /// False after a write failed and until a later write succeeds.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records queued and not yet written.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    fn send(&self, job: Job) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::SendError(job)) = self.sender.send(job) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("audit writer stopped, record dropped and gateway failing closed");
            self.healthy.store(false, Ordering::Release);
            if let Some(ack) = job.ack {
                let _ = ack.send(Err(AuditUnavailable));
            }
        }
    }
}

/// The writer thread. Dropping every [`AuditSink`] and calling
/// [`AuditWriter::join`] writes what is queued and stops it.
pub struct AuditWriter {
    handle: JoinHandle<()>,
}

impl AuditWriter {
    pub fn start(
        store: Arc<dyn Store>,
        batch_size: usize,
    ) -> std::io::Result<(AuditSink, AuditWriter)> {
        let (sender, receiver) = mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let queued = Arc::new(AtomicU64::new(0));
        let sink = AuditSink {
            sender,
            healthy: healthy.clone(),
            queued: queued.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("stepgate-audit".into())
            .spawn(move || run(store.as_ref(), &receiver, batch_size, &healthy, &queued))?;
        Ok((sink, AuditWriter { handle }))
    }

    /// Waits for the writer to drain its queue and stop. Every sink must
    /// have been dropped first.
    pub fn join(self) {
        if self.handle.join().is_err() {
            tracing::error!("audit writer thread panicked");
        }
    }
}

const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Time a batch of allow records waits for more records when the queue runs
/// dry. Each commit is one fsync, so under load this turns thousands of
/// commits a second into a few hundred. The writer sleeps instead of
/// waiting on the queue, so senders in that time need not wake it. A durable
/// record queued meanwhile waits at most this long, and a batch that holds
/// one from the start is committed at once.
const LINGER: Duration = Duration::from_millis(5);

/// Adds queued jobs to `batch` until it is full. When the queue runs dry
/// first and the batch holds only allow records, waits `LINGER` once and
/// takes what arrived meanwhile.
fn collect_batch(receiver: &Receiver<Job>, batch: &mut Vec<Job>, batch_size: usize) {
    drain(receiver, batch, batch_size);
    if batch.len() < batch_size && batch.iter().all(|job| job.ack.is_none()) {
        std::thread::sleep(LINGER);
        drain(receiver, batch, batch_size);
    }
}

fn drain(receiver: &Receiver<Job>, batch: &mut Vec<Job>, batch_size: usize) {
    while batch.len() < batch_size {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => return,
        }
    }
}

fn run(
    store: &dyn Store,
    receiver: &Receiver<Job>,
    batch_size: usize,
    healthy: &AtomicBool,
    queued: &AtomicU64,
) {
    tracing::info!(batch_size, "audit writer started");
    let mut batch: Vec<Job> = Vec::with_capacity(batch_size);
    loop {
        if batch.is_empty() {
            match receiver.recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        collect_batch(receiver, &mut batch, batch_size);
        let entries: Vec<Entry> = batch.iter().map(|job| job.entry.clone()).collect();
        match store.append_audit(entries) {
            Ok(sealed) => {
                if !healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("audit trail writable again");
                }
                queued.fetch_sub(batch.len() as u64, Ordering::Relaxed);
                for (job, record) in batch.drain(..).zip(sealed) {
                    if let Some(ack) = job.ack {
                        let _ = ack.send(Ok(record.seq));
                    }
                }
            }
            Err(err) => {
                // The batch stays queued and is retried, so no record is
                // lost. Callers waiting for durability are notified now, and
                // the gateway rejects new requests until a write succeeds.
                tracing::error!(error = %err, records = batch.len(), "audit write failed, failing closed and retrying");
                healthy.store(false, Ordering::Release);
                for job in &mut batch {
                    if let Some(ack) = job.ack.take() {
                        let _ = ack.send(Err(AuditUnavailable));
                    }
                }
                match receiver.recv_timeout(RETRY_DELAY) {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(RETRY_DELAY);
                        if let Err(err) =
                            store.append_audit(batch.iter().map(|job| job.entry.clone()).collect())
                        {
                            tracing::error!(error = %err, records = batch.len(), "audit records lost at shutdown");
                        }
                        return;
                    }
                }
            }
        }
    }
    tracing::info!("audit writer stopped");
}
