//! What must stay unique across technologies: a title per project, ignoring case and
//! inner spacing. The write side takes these claims in the transaction of the events
//! that need them; a claim held by another technology fails the command.

use crate::values::ProjectId;

use super::TechnologyRecord;

/// One uniqueness claim of a technology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UniqueClaim {
    /// The title, within its project.
    Title {
        /// The project the title is unique in.
        project: ProjectId,
        /// The title's uniqueness key (lower case, inner white space folded).
        key: String,
    },
}

/// The scope prefix of title claims.
const TITLE_SCOPE: &str = "title:technology:";

impl UniqueClaim {
    /// The claims a live technology holds.
    pub fn of(record: &TechnologyRecord) -> Vec<Self> {
        vec![Self::Title {
            project: record.project_id,
            key: record.fields.title.uniqueness_key(),
        }]
    }

    /// What the claim is unique within, as the claims table stores it.
    pub fn scope(&self) -> String {
        match self {
            Self::Title { project, .. } => format!("{TITLE_SCOPE}{project}"),
        }
    }

    /// The unique value.
    pub fn key(&self) -> &str {
        match self {
            Self::Title { key, .. } => key,
        }
    }

    /// The request field the claim comes from.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Title { .. } => "title",
        }
    }

    /// Why a command that needs this claim, held by another technology, is refused.
    pub fn conflict(&self) -> String {
        match self {
            Self::Title { key, .. } => {
                format!("another technology in this project already has title {key:?}")
            }
        }
    }

    /// The claim a stored `(scope, key)` is, if it is one of these.
    pub fn from_stored(scope: &str, key: &str) -> Option<Self> {
        let project = scope.strip_prefix(TITLE_SCOPE)?.parse::<i64>().ok()?;
        Some(Self::Title {
            project: ProjectId::parse("project_id", project).ok()?,
            key: key.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_claim_round_trips_through_its_stored_form() {
        let claim = UniqueClaim::Title {
            project: ProjectId::parse("project_id", 7).unwrap(),
            key: "juce".into(),
        };
        assert_eq!(claim.scope(), "title:technology:7");
        assert_eq!(
            UniqueClaim::from_stored(&claim.scope(), claim.key()),
            Some(claim.clone())
        );
        assert_eq!(claim.field(), "title");
        assert!(claim.conflict().contains("\"juce\""));
        assert_eq!(UniqueClaim::from_stored("title:job:7", "x"), None);
    }
}
