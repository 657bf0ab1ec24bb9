//! The two aggregates as the executor writes them: their project, their uniqueness
//! claims, their commands' names for `commands_total`, and the job outcomes counted in
//! `jobs_total`.

use commandcenter_domain::job::{Job, JobCommand, JobEvent, WorkerAction};
use commandcenter_domain::technology::{Technology, TechnologyCommand, UniqueClaim};
use commandcenter_domain::values::ProjectId;
use commandcenter_event_store::Claim;

use crate::WriteModel;

impl WriteModel for Technology {
    fn project_id(&self) -> Option<ProjectId> {
        self.record().map(|r| r.project_id)
    }

    fn claims(&self) -> Vec<Claim> {
        match self {
            Technology::Live(record) => UniqueClaim::of(record)
                .into_iter()
                .map(|claim| Claim {
                    scope: claim.scope(),
                    key: claim.key().to_string(),
                })
                .collect(),
            Technology::NotCreated | Technology::Deleted(_) => Vec::new(),
        }
    }

    fn command_name(command: &TechnologyCommand) -> &'static str {
        match command {
            TechnologyCommand::CreateTechnology { .. } => "CreateTechnology",
            TechnologyCommand::UpdateTechnology { .. } => "UpdateTechnology",
            TechnologyCommand::ChangeTechnologyStatus { .. } => "ChangeTechnologyStatus",
            TechnologyCommand::DeleteTechnology { .. } => "DeleteTechnology",
        }
    }

    fn creates(command: &TechnologyCommand) -> bool {
        matches!(command, TechnologyCommand::CreateTechnology { .. })
    }
}

impl WriteModel for Job {
    fn project_id(&self) -> Option<ProjectId> {
        self.record().map(|r| r.project_id)
    }

    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }

    fn command_name(command: &JobCommand) -> &'static str {
        match command {
            JobCommand::CreateJob { .. } => "CreateJob",
            JobCommand::DispatchJob { .. } => "DispatchJob",
            JobCommand::StartJob { .. } => "StartJob",
            JobCommand::ReportJobProgress { .. } => "ReportJobProgress",
            JobCommand::CompleteJob { .. } => "CompleteJob",
            JobCommand::FailJob { .. } => "FailJob",
            JobCommand::RequestJobCancel { .. } => "RequestJobCancel",
            JobCommand::ConfirmJobCancelled { .. } => "ConfirmJobCancelled",
            JobCommand::PatchJob { .. } => "PatchJob",
            JobCommand::DeleteJob { .. } => "DeleteJob",
            JobCommand::ExpireLease { .. } => "ExpireJobLease",
            JobCommand::Worker { action, .. } => match action {
                WorkerAction::RenewLease { .. } => "RenewJobLease",
                WorkerAction::ReportProgress { .. } => "ReportJobProgress",
                WorkerAction::Complete { .. } => "CompleteJob",
                WorkerAction::Fail { .. } => "FailJob",
                WorkerAction::ConfirmCancelled => "ConfirmJobCancelled",
                WorkerAction::Release { .. } => "ReleaseJob",
            },
        }
    }

    fn creates(command: &JobCommand) -> bool {
        matches!(command, JobCommand::CreateJob { .. })
    }

    /// Jobs reaching an outcome count in `jobs_total`; finished runs in
    /// `job_duration_seconds`.
    fn observe(&self, events: &[JobEvent], metrics: &commandcenter_metrics::Metrics) {
        let Some(record) = self.record() else { return };
        let job_type = record.job_type.as_str();
        for event in events {
            let outcome = match event {
                JobEvent::JobCompleted { .. } => "completed",
                JobEvent::JobFailed { retry_at: None, .. } => "failed",
                JobEvent::JobFailed { .. } => "retried",
                JobEvent::JobCancelled { .. } => "cancelled",
                JobEvent::JobReleased { .. } => "released",
                _ => continue,
            };
            metrics.jobs.with_label_values(&[job_type, outcome]).inc();
        }
        if let (true, Some(started), Some(completed)) = (
            record.status.is_terminal(),
            record.started_at,
            record.completed_at,
        ) {
            let finished_now = events.iter().any(|e| {
                matches!(
                    e,
                    JobEvent::JobCompleted { .. }
                        | JobEvent::JobFailed { retry_at: None, .. }
                        | JobEvent::JobCancelled { .. }
                )
            });
            if finished_now {
                let seconds =
                    (completed - started).num_microseconds().unwrap_or_default() as f64 / 1e6;
                metrics
                    .job_duration
                    .with_label_values(&[job_type])
                    .observe(seconds);
            }
        }
    }
}
