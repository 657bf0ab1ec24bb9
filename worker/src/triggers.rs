//! The shared durable consumer: turns trigger events into claimed, running jobs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind, Message};
use chrono::Utc;
use commandcenter_domain::job::{Job, JobCommand, JobError, JobEvent, WorkerClaim};
use commandcenter_event_store::pause::{pause_point, WORKER_AFTER_CLAIM};
use commandcenter_event_store::{Deployment, StoredEvent};
use commandcenter_executor::apply;
use commandcenter_executor::{clock, CommandError};
use commandcenter_relay::{EventStream, StreamError};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::progress::Reporter;
use crate::supervisor::supervise;
use crate::{Shared, Worker};

/// How long a pull request waits for messages before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How long a claimed-but-unacknowledged trigger stays with one worker.
const ACK_WAIT: Duration = Duration::from_secs(30);

type NatsError = async_nats::Error;

/// Claims and runs jobs until `shutdown`, then drains the running ones.
pub(crate) async fn consume(
    shared: Arc<Shared>,
    nats: async_nats::Client,
    stream: EventStream,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency));
    let drain = CancellationToken::new();
    let mut jobs = JoinSet::new();
    while !shutdown.is_cancelled() {
        let pulled = pull(
            &shared, &nats, &stream, &slots, &drain, &mut jobs, &shutdown,
        )
        .await;
        if let Err(err) = pulled {
            let permanent = err
                .downcast_ref::<StreamError>()
                .is_some_and(StreamError::is_permanent);
            if permanent {
                tracing::error!(%err, "job consumer cannot start: the stream is another deployment's");
            } else {
                tracing::warn!(%err, "job consumer failed; retrying");
            }
            let wait = Duration::from_secs(if permanent { 10 } else { 1 });
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
    let running = jobs.len();
    if running > 0 {
        tracing::info!(
            running,
            "worker draining: running jobs get the shutdown grace to finish"
        );
    }
    drain.cancel();
    while jobs.join_next().await.is_some() {}
}

async fn job_consumer(
    nats: &async_nats::Client,
    stream: &EventStream,
    deployment: &Deployment,
    pool: &sqlx::PgPool,
) -> Result<consumer::PullConsumer, NatsError> {
    let js = jetstream::new(nats.clone());
    let handle = stream.ensure(&js, deployment, pool).await?;
    let name = Worker::consumer_name(stream);
    // NATS 2.9 has no multi-subject filters: the consumer sees every job event and the
    // workers acknowledge the ones that start nothing.
    Ok(handle
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                description: Some("CommandCenter job workers (competing consumers)".into()),
                filter_subject: stream.aggregate_subjects("job"),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await?)
}

async fn pull(
    shared: &Arc<Shared>,
    nats: &async_nats::Client,
    stream: &EventStream,
    slots: &Arc<Semaphore>,
    drain: &CancellationToken,
    jobs: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> Result<(), NatsError> {
    let deployment = Deployment::load(shared.store.pool()).await?;
    let consumer = job_consumer(nats, stream, &deployment, shared.store.pool()).await?;
    loop {
        while jobs.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                permit = slots.clone().acquire_owned() => drop(permit),
            }
            continue;
        }
        // Never more messages than free slots, so a trigger never waits here for a slot
        // while its acknowledgement deadline runs.
        let mut batch = consumer
            .batch()
            .max_messages(free)
            .expires(PULL_EXPIRES)
            .messages()
            .await?;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = batch.next() => next,
            };
            let Some(message) = next else { break };
            let message = message?;
            if !deployment.owns(message.headers.as_ref()) {
                tracing::error!(subject = %message.subject, "job event published by another deployment in this deployment's stream; ignored");
                acknowledge(&message, AckKind::Term).await;
                continue;
            }
            handle(shared, message, slots, drain, jobs).await;
        }
    }
}

async fn acknowledge(message: &Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(%err, subject = %message.subject, "cannot acknowledge a job event");
    }
}

async fn handle(
    shared: &Arc<Shared>,
    message: Message,
    slots: &Arc<Semaphore>,
    drain: &CancellationToken,
    jobs: &mut JoinSet<()>,
) {
    let decoded = serde_json::from_slice::<StoredEvent>(&message.payload).and_then(|stored| {
        serde_json::from_value::<JobEvent>(stored.payload.clone()).map(|event| (stored, event))
    });
    let (stored, event) = match decoded {
        Ok(decoded) => decoded,
        Err(err) => {
            tracing::error!(%err, subject = %message.subject, "undecodable job event; skipped");
            return acknowledge(&message, AckKind::Term).await;
        }
    };
    if !event.makes_job_startable() {
        return acknowledge(&message, AckKind::Ack).await;
    }
    if let Some(wait) = event
        .due_at()
        .and_then(|due| (due - Utc::now()).to_std().ok())
        .filter(|wait| !wait.is_zero())
    {
        return acknowledge(&message, AckKind::Nak(Some(wait))).await;
    }
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        return acknowledge(&message, AckKind::Nak(Some(Duration::from_millis(100)))).await;
    };
    jobs.spawn(claim_and_run(
        shared.clone(),
        message,
        stored,
        permit,
        drain.clone(),
    ));
}

/// Claims the job with `StartJob`; on success acknowledges the trigger and runs it.
async fn claim_and_run(
    shared: Arc<Shared>,
    message: Message,
    trigger: StoredEvent,
    permit: OwnedSemaphorePermit,
    drain: CancellationToken,
) {
    let worker_id = shared.config.worker_id.clone();
    let correlation_id = trigger.metadata["correlation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut meta = Reporter::meta(&worker_id, &correlation_id);
    meta.causation_id = Some(format!(
        "{}:{}:{}",
        trigger.aggregate_type, trigger.aggregate_id, trigger.sequence
    ));
    // Registered before the claim: a cancel request right after it is not missed.
    let job = shared.running.insert(&trigger.aggregate_id);
    let start = JobCommand::StartJob {
        worker_id: worker_id.clone(),
        lease_seconds: shared.config.lease_seconds(),
        at: clock::now(),
    };
    let claimed = apply::<Job>(
        &shared.store,
        &shared.metrics,
        &trigger.aggregate_id,
        start,
        meta,
    )
    .await;
    if claimed.is_err() {
        shared.running.remove(&trigger.aggregate_id, &job);
    }
    let record = match claimed {
        Ok(applied) => match applied.state.live() {
            Ok(record) => record.clone(),
            Err(err) => {
                tracing::error!(%err, "started job has no record");
                shared.running.remove(&trigger.aggregate_id, &job);
                return acknowledge(&message, AckKind::Ack).await;
            }
        },
        Err(CommandError::Job(JobError::NotDue { scheduled_for })) => {
            let wait = (scheduled_for - Utc::now()).to_std().unwrap_or_default();
            return acknowledge(&message, AckKind::Nak(Some(wait))).await;
        }
        // Lost the race with other writers several times: not a refusal, try again.
        Err(CommandError::Concurrent) => {
            return acknowledge(&message, AckKind::Nak(Some(Duration::from_millis(50)))).await;
        }
        Err(err) if err.is_fault() => {
            tracing::warn!(%err, job_id = %trigger.aggregate_id, "cannot claim the job now; it will be offered again");
            return acknowledge(&message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
        }
        Err(err) => {
            // Started by another worker, cancelled, deleted or finished meanwhile.
            tracing::debug!(%err, job_id = %trigger.aggregate_id, "trigger refused");
            return acknowledge(&message, AckKind::Ack).await;
        }
    };
    pause_point(WORKER_AFTER_CLAIM).await;
    acknowledge(&message, AckKind::Ack).await;
    let claim = WorkerClaim {
        worker_id,
        attempt: record.attempts,
    };
    supervise(shared, record, claim, correlation_id, job, drain).await;
    drop(permit);
}
