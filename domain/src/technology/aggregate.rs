//! The technology aggregate: its state, how commands are decided and events applied.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{
    StatusChange, TechnologyChanges, TechnologyCommand, TechnologyError, TechnologyEvent,
    TechnologyFields, TechnologyStatus,
};
use crate::error::ValidationError;
use crate::values::ProjectId;

/// A live (or deleted) technology as its events describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TechnologyRecord {
    /// Aggregate id.
    pub id: String,
    /// Owning project.
    pub project_id: ProjectId,
    /// Current values.
    #[serde(flatten)]
    pub fields: TechnologyFields,
    /// When it was created.
    #[serde(serialize_with = "crate::serde_helpers::time")]
    pub created_at: DateTime<Utc>,
    /// When any event last touched it.
    #[serde(serialize_with = "crate::serde_helpers::time")]
    pub updated_at: DateTime<Utc>,
}

/// The technology aggregate's lifecycle.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum Technology {
    /// No event yet.
    #[default]
    NotCreated,
    /// On the radar.
    Live(TechnologyRecord),
    /// Removed; kept for history and time travel.
    Deleted(TechnologyRecord),
}

impl Technology {
    /// The record of a live technology, or why there is none.
    pub fn live(&self) -> Result<&TechnologyRecord, TechnologyError> {
        match self {
            Self::NotCreated => Err(TechnologyError::NotFound),
            Self::Live(record) => Ok(record),
            Self::Deleted(_) => Err(TechnologyError::Deleted),
        }
    }

    /// The record, live or deleted.
    pub fn record(&self) -> Option<&TechnologyRecord> {
        match self {
            Self::NotCreated => None,
            Self::Live(record) | Self::Deleted(record) => Some(record),
        }
    }

    fn record_mut(&mut self) -> Option<&mut TechnologyRecord> {
        match self {
            Self::NotCreated => None,
            Self::Live(record) | Self::Deleted(record) => Some(record),
        }
    }
}

/// Refuses a technology that names itself as a dependency or an alternative.
fn check_no_self_reference(
    id: &str,
    dependencies: Option<&super::Dependencies>,
    alternatives: Option<&Vec<String>>,
) -> Result<(), ValidationError> {
    if dependencies.is_some_and(|deps| deps.contains_key(id)) {
        return Err(ValidationError::new(
            "dependencies",
            "a technology cannot depend on itself",
        ));
    }
    if alternatives.is_some_and(|alts| alts.iter().any(|a| a == id)) {
        return Err(ValidationError::new(
            "alternatives",
            "a technology cannot be its own alternative",
        ));
    }
    Ok(())
}

fn status_event(
    current: TechnologyStatus,
    change: Option<StatusChange>,
    at: DateTime<Utc>,
) -> Option<TechnologyEvent> {
    change
        .filter(|c| c.status != current)
        .map(|c| TechnologyEvent::TechnologyStatusChanged {
            from: current,
            to: c.status,
            reason: c.reason,
            at,
        })
}

impl Aggregate for Technology {
    const TYPE: &'static str = "technology";
    type Command = TechnologyCommand;
    type Event = TechnologyEvent;
    type Error = TechnologyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            TechnologyCommand::CreateTechnology {
                id,
                project_id,
                fields,
                at,
            } => {
                if !matches!(self, Self::NotCreated) {
                    return Err(TechnologyError::AlreadyExists);
                }
                check_no_self_reference(
                    &id,
                    Some(&fields.dependencies),
                    Some(&fields.alternatives),
                )?;
                let event = TechnologyEvent::TechnologyCreated {
                    id,
                    project_id,
                    technology: fields,
                    at,
                };
                sink.write(event, self).await;
            }
            TechnologyCommand::UpdateTechnology {
                changes,
                status,
                at,
            } => {
                let record = self.live()?;
                let changes: TechnologyChanges = changes.without_unchanged(&record.fields);
                check_no_self_reference(
                    &record.id,
                    changes.dependencies.as_ref(),
                    changes.alternatives.as_ref(),
                )?;
                let current = record.fields.status;
                let status_event = status_event(current, status, at);
                let update_event =
                    (!changes.is_empty()).then(|| TechnologyEvent::TechnologyUpdated {
                        changes: Box::new(changes),
                        at,
                    });
                // Un-archiving must come before the edits it enables; archiving after them.
                let events = match (current, status_event, update_event) {
                    (TechnologyStatus::Archived, Some(status), update) => [Some(status), update],
                    (TechnologyStatus::Archived, None, Some(_)) => {
                        return Err(TechnologyError::Archived)
                    }
                    (_, status, update) => [update, status],
                };
                for event in events.into_iter().flatten() {
                    sink.write(event, self).await;
                }
            }
            TechnologyCommand::ChangeTechnologyStatus { change, at } => {
                let current = self.live()?.fields.status;
                if let Some(event) = status_event(current, Some(change), at) {
                    sink.write(event, self).await;
                }
            }
            TechnologyCommand::DeleteTechnology { at } => {
                self.live()?;
                sink.write(TechnologyEvent::TechnologyDeleted { at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let at = event.at();
        match event {
            TechnologyEvent::TechnologyCreated {
                id,
                project_id,
                technology,
                at,
            } => {
                *self = Self::Live(TechnologyRecord {
                    id,
                    project_id,
                    fields: *technology,
                    created_at: at,
                    updated_at: at,
                });
            }
            TechnologyEvent::TechnologyUpdated { changes, .. } => {
                if let Some(record) = self.record_mut() {
                    changes.apply_to(&mut record.fields);
                }
            }
            TechnologyEvent::TechnologyStatusChanged { to, .. } => {
                if let Some(record) = self.record_mut() {
                    record.fields.status = to;
                }
            }
            TechnologyEvent::TechnologyDeleted { .. } => {
                if let Self::Live(record) = std::mem::take(self) {
                    *self = Self::Deleted(record);
                }
            }
        }
        if let Some(record) = self.record_mut() {
            record.updated_at = at;
        }
    }
}

#[cfg(test)]
mod tests {

    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::technology::TechnologyDomain;
    use crate::values::{Priority, Score, Tags, Title};

    type Spec = TestFramework<Technology>;

    const ID: &str = "0190b6c2-0000-7000-8000-000000000001";

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 12, minute, 0).unwrap()
    }

    fn fields(title: &str) -> TechnologyFields {
        TechnologyFields {
            title: Title::parse("title", title).unwrap(),
            vendor: None,
            domain: TechnologyDomain::AudioDsp,
            status: TechnologyStatus::Discovery,
            relevance_score: Score::parse("relevance_score", 50).unwrap(),
            priority: Priority::parse("priority", 3).unwrap(),
            description: None,
            notes: None,
            use_cases: None,
            documentation_url: None,
            repository_url: None,
            website_url: None,
            tags: Tags::default(),
            latency_ms: None,
            throughput_qps: None,
            integration_difficulty: None,
            integration_time_estimate_days: None,
            maturity_level: None,
            stability_score: None,
            cost_tier: None,
            cost_monthly_usd: None,
            dependencies: Default::default(),
            alternatives: Vec::new(),
            last_hn_mention: None,
            hn_score_avg: None,
            github_stars: None,
            github_last_commit: None,
        }
    }

    fn created() -> TechnologyEvent {
        TechnologyEvent::TechnologyCreated {
            id: ID.into(),
            project_id: ProjectId::parse("project_id", 1).unwrap(),
            technology: Box::new(fields("JUCE")),
            at: at(0),
        }
    }

    fn status(to: TechnologyStatus) -> StatusChange {
        StatusChange {
            status: to,
            reason: None,
        }
    }

    fn status_changed(
        from: TechnologyStatus,
        to: TechnologyStatus,
        minute: u32,
    ) -> TechnologyEvent {
        TechnologyEvent::TechnologyStatusChanged {
            from,
            to,
            reason: None,
            at: at(minute),
        }
    }

    fn update(changes: TechnologyChanges, status: Option<StatusChange>) -> TechnologyCommand {
        TechnologyCommand::UpdateTechnology {
            changes: Box::new(changes),
            status,
            at: at(1),
        }
    }

    #[tokio::test]
    async fn create_records_the_technology() {
        Spec::with(())
            .given_no_previous_events()
            .when_async(TechnologyCommand::CreateTechnology {
                id: ID.into(),
                project_id: ProjectId::parse("project_id", 1).unwrap(),
                fields: Box::new(fields("JUCE")),
                at: at(0),
            })
            .await
            .then_expect_events(vec![created()]);
    }

    #[tokio::test]
    async fn create_twice_is_refused() {
        Spec::with(())
            .given(vec![created()])
            .when_async(TechnologyCommand::CreateTechnology {
                id: ID.into(),
                project_id: ProjectId::parse("project_id", 1).unwrap(),
                fields: Box::new(fields("JUCE")),
                at: at(0),
            })
            .await
            .then_expect_error(TechnologyError::AlreadyExists);
    }

    #[tokio::test]
    async fn create_refuses_self_dependency() {
        let mut f = fields("JUCE");
        f.dependencies.insert(ID.into(), "requires".into());
        let result = Spec::with(())
            .given_no_previous_events()
            .when_async(TechnologyCommand::CreateTechnology {
                id: ID.into(),
                project_id: ProjectId::parse("project_id", 1).unwrap(),
                fields: Box::new(f),
                at: at(0),
            })
            .await
            .inspect_result();
        match result {
            Err(TechnologyError::Invalid(e)) => assert_eq!(e.field, "dependencies"),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn update_records_only_changed_fields() {
        let changes = TechnologyChanges {
            title: Some(Title::parse("title", "JUCE").unwrap()),
            priority: Some(Priority::parse("priority", 5).unwrap()),
            vendor: Some(Some("Raw Material".into())),
            ..Default::default()
        };
        let expected = TechnologyChanges {
            priority: Some(Priority::parse("priority", 5).unwrap()),
            vendor: Some(Some("Raw Material".into())),
            ..Default::default()
        };
        Spec::with(())
            .given(vec![created()])
            .when_async(update(changes, None))
            .await
            .then_expect_events(vec![TechnologyEvent::TechnologyUpdated {
                changes: Box::new(expected),
                at: at(1),
            }]);
    }

    #[tokio::test]
    async fn no_op_update_records_nothing() {
        let changes = TechnologyChanges {
            title: Some(Title::parse("title", "JUCE").unwrap()),
            vendor: Some(None),
            ..Default::default()
        };
        Spec::with(())
            .given(vec![created()])
            .when_async(update(changes, Some(status(TechnologyStatus::Discovery))))
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn update_with_status_records_both_edit_then_status() {
        let changes = TechnologyChanges {
            notes: Some(Some("done".into())),
            ..Default::default()
        };
        Spec::with(())
            .given(vec![created()])
            .when_async(update(
                changes.clone(),
                Some(status(TechnologyStatus::Research)),
            ))
            .await
            .then_expect_events(vec![
                TechnologyEvent::TechnologyUpdated {
                    changes: Box::new(changes),
                    at: at(1),
                },
                status_changed(TechnologyStatus::Discovery, TechnologyStatus::Research, 1),
            ]);
    }

    #[tokio::test]
    async fn update_refuses_self_alternative() {
        let changes = TechnologyChanges {
            alternatives: Some(vec![ID.into()]),
            ..Default::default()
        };
        let result = Spec::with(())
            .given(vec![created()])
            .when_async(update(changes, None))
            .await
            .inspect_result();
        assert!(matches!(result, Err(TechnologyError::Invalid(e)) if e.field == "alternatives"));
    }

    #[tokio::test]
    async fn archived_technology_refuses_edits() {
        let changes = TechnologyChanges {
            notes: Some(Some("x".into())),
            ..Default::default()
        };
        Spec::with(())
            .given(vec![
                created(),
                status_changed(TechnologyStatus::Discovery, TechnologyStatus::Archived, 1),
            ])
            .when_async(update(changes, None))
            .await
            .then_expect_error(TechnologyError::Archived);
    }

    #[tokio::test]
    async fn unarchiving_in_the_same_update_comes_first() {
        let changes = TechnologyChanges {
            notes: Some(Some("x".into())),
            ..Default::default()
        };
        Spec::with(())
            .given(vec![
                created(),
                status_changed(TechnologyStatus::Discovery, TechnologyStatus::Archived, 1),
            ])
            .when_async(update(
                changes.clone(),
                Some(status(TechnologyStatus::Research)),
            ))
            .await
            .then_expect_events(vec![
                status_changed(TechnologyStatus::Archived, TechnologyStatus::Research, 1),
                TechnologyEvent::TechnologyUpdated {
                    changes: Box::new(changes),
                    at: at(1),
                },
            ]);
    }

    #[tokio::test]
    async fn change_status_records_from_and_to_with_reason() {
        Spec::with(())
            .given(vec![created()])
            .when_async(TechnologyCommand::ChangeTechnologyStatus {
                change: StatusChange {
                    status: TechnologyStatus::Evaluation,
                    reason: Some("benchmarks look good".into()),
                },
                at: at(2),
            })
            .await
            .then_expect_events(vec![TechnologyEvent::TechnologyStatusChanged {
                from: TechnologyStatus::Discovery,
                to: TechnologyStatus::Evaluation,
                reason: Some("benchmarks look good".into()),
                at: at(2),
            }]);
    }

    #[tokio::test]
    async fn change_to_the_current_status_records_nothing() {
        Spec::with(())
            .given(vec![created()])
            .when_async(TechnologyCommand::ChangeTechnologyStatus {
                change: status(TechnologyStatus::Discovery),
                at: at(2),
            })
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn delete_records_deletion() {
        Spec::with(())
            .given(vec![created()])
            .when_async(TechnologyCommand::DeleteTechnology { at: at(3) })
            .await
            .then_expect_events(vec![TechnologyEvent::TechnologyDeleted { at: at(3) }]);
    }

    #[tokio::test]
    async fn deleted_technology_accepts_no_command() {
        let given = || vec![created(), TechnologyEvent::TechnologyDeleted { at: at(3) }];
        Spec::with(())
            .given(given())
            .when_async(TechnologyCommand::DeleteTechnology { at: at(4) })
            .await
            .then_expect_error(TechnologyError::Deleted);
        Spec::with(())
            .given(given())
            .when_async(update(TechnologyChanges::default(), None))
            .await
            .then_expect_error(TechnologyError::Deleted);
        Spec::with(())
            .given(given())
            .when_async(TechnologyCommand::ChangeTechnologyStatus {
                change: status(TechnologyStatus::Research),
                at: at(4),
            })
            .await
            .then_expect_error(TechnologyError::Deleted);
    }

    #[tokio::test]
    async fn commands_on_an_unknown_technology_are_not_found() {
        Spec::with(())
            .given_no_previous_events()
            .when_async(TechnologyCommand::DeleteTechnology { at: at(0) })
            .await
            .then_expect_error(TechnologyError::NotFound);
        Spec::with(())
            .given_no_previous_events()
            .when_async(update(TechnologyChanges::default(), None))
            .await
            .then_expect_error(TechnologyError::NotFound);
    }

    #[test]
    fn apply_folds_events_into_the_record() {
        let mut tech = Technology::default();
        tech.apply(created());
        tech.apply(TechnologyEvent::TechnologyUpdated {
            changes: Box::new(TechnologyChanges {
                vendor: Some(Some("ROLI".into())),
                ..Default::default()
            }),
            at: at(5),
        });
        tech.apply(status_changed(
            TechnologyStatus::Discovery,
            TechnologyStatus::Integrated,
            6,
        ));
        let record = tech.live().unwrap();
        assert_eq!(record.fields.vendor.as_deref(), Some("ROLI"));
        assert_eq!(record.fields.status, TechnologyStatus::Integrated);
        assert_eq!(record.created_at, at(0));
        assert_eq!(record.updated_at, at(6));
        tech.apply(TechnologyEvent::TechnologyDeleted { at: at(7) });
        assert_eq!(tech.live(), Err(TechnologyError::Deleted));
        assert_eq!(tech.record().unwrap().updated_at, at(7));
    }
}
