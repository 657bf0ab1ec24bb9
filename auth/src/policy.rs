//! The access rule of every route, in one table keyed by method and route template.
//!
//! A route missing from the table is open to deployment-wide admin keys only, so a new
//! route is closed until someone decides who may use it (and the route-matrix test fails
//! until it has a row).

use axum::http::Method;

use crate::{Principal, Role};

/// Which keys may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a key (health, metrics, the OpenAPI document).
    Public,
    /// Any key: queries and sockets.
    Read,
    /// Writer and admin keys: commands.
    Write,
    /// Auditor and admin keys: histories, the event feed, time travel, verification.
    Audit,
    /// Admin keys: key management.
    Admin,
    /// Deployment-wide admin keys only: projects.
    DeploymentAdmin,
}

impl Access {
    /// Whether `principal` may call a route with this access.
    pub fn allows(self, principal: &Principal) -> bool {
        match self {
            Self::Public | Self::Read => true,
            Self::Write => matches!(principal.role, Role::Writer | Role::Admin),
            Self::Audit => matches!(principal.role, Role::Auditor | Role::Admin),
            Self::Admin => principal.role == Role::Admin,
            Self::DeploymentAdmin => principal.role == Role::Admin && principal.project.is_none(),
        }
    }

    /// What a refused key would need, in words.
    pub fn needs(self) -> &'static str {
        match self {
            Self::Public | Self::Read => "any key",
            Self::Write => "a writer or admin key",
            Self::Audit => "an auditor or admin key",
            Self::Admin => "an admin key",
            Self::DeploymentAdmin => "a deployment-wide admin key",
        }
    }
}

/// An aggregate kind whose id appears in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `technology`.
    Technology,
    /// `job`.
    Job,
}

impl Kind {
    /// The aggregate type in the event store.
    pub fn aggregate_type(self) -> &'static str {
        match self {
            Self::Technology => "technology",
            Self::Job => "job",
        }
    }
}

/// How a route is kept to the key's project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Not project data (operations, or checked by the handler against the key:
    /// the project and key registries, the multiplexed socket's topics).
    Unscoped,
    /// A list or summary: the guard rewrites `project_id` in the query to the key's
    /// project, whatever the client sent.
    Query,
    /// One aggregate named by a path parameter: another project's is a 404.
    Resource {
        /// Its kind.
        kind: Kind,
        /// The path parameter holding its id.
        param: &'static str,
    },
    /// A create command: the body's `project_id` defaults to the key's project, and any
    /// other project is a 404 (checked through [`crate::Caller`]).
    Body,
}

/// A route's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Who may call it.
    pub access: Access,
    /// How it is kept to the key's project.
    pub scope: Scope,
    /// `as_of`, `as_of_position` or `as_of_version` in the query make it an [`Access::Audit`]
    /// request (time travel is history).
    pub time_travel: bool,
    /// A WebSocket: the key may come as `access_token` in the query (browsers cannot set
    /// headers on sockets), and the key's socket budget applies.
    pub socket: bool,
}

const fn rule(access: Access, scope: Scope) -> Rule {
    Rule {
        access,
        scope,
        time_travel: false,
        socket: false,
    }
}

const fn on(kind: Kind) -> Scope {
    Scope::Resource { kind, param: "id" }
}

/// Every route's rule: method, route template, rule.
pub const RULES: &[(&str, &str, Rule)] = {
    use Access::*;
    use Kind::*;
    use Scope::*;
    &[
        ("GET", "/health/live", rule(Public, Unscoped)),
        ("GET", "/health/ready", rule(Public, Unscoped)),
        // The previous API's health route: the same answer as /health/ready.
        ("GET", "/health", rule(Public, Unscoped)),
        ("GET", "/metrics", rule(Public, Unscoped)),
        ("GET", "/api/v1/openapi.json", rule(Public, Unscoped)),
        // The dashboard page and its assets hold no data.
        ("GET", "/", rule(Public, Unscoped)),
        ("GET", "/assets/{file}", rule(Public, Unscoped)),
        // The interactive API reference, rendered from the public OpenAPI document.
        ("GET", "/docs", rule(Public, Unscoped)),
        ("GET", "/docs/assets/{file}", rule(Public, Unscoped)),
        // Who the calling key is (the dashboard hides what its role may not use).
        ("GET", "/api/v1/session", rule(Read, Unscoped)),
        // Queries.
        ("GET", "/api/v1/technologies", rule(Read, Query)),
        (
            "GET",
            "/api/v1/technologies/{id}",
            Rule {
                time_travel: true,
                ..rule(Read, on(Technology))
            },
        ),
        ("GET", "/api/v1/jobs", rule(Read, Query)),
        ("GET", "/api/v1/jobs/active/list", rule(Read, Query)),
        ("GET", "/api/v1/jobs/statistics/summary", rule(Read, Query)),
        (
            "GET",
            "/api/v1/jobs/{id}",
            Rule {
                time_travel: true,
                ..rule(Read, on(Job))
            },
        ),
        ("GET", "/api/v1/jobs/{id}/progress", rule(Read, on(Job))),
        ("GET", "/api/v1/jobs/{id}/artifact", rule(Read, on(Job))),
        ("GET", "/api/v1/dashboard/stats", rule(Read, Query)),
        (
            "GET",
            "/api/v1/dashboard/recent-activity",
            rule(Read, Query),
        ),
        (
            "GET",
            "/api/v1/jobs/ws/{job_id}",
            Rule {
                socket: true,
                ..rule(
                    Read,
                    Resource {
                        kind: Job,
                        param: "job_id",
                    },
                )
            },
        ),
        (
            "GET",
            "/api/v1/ws",
            Rule {
                socket: true,
                ..rule(Read, Unscoped)
            },
        ),
        ("GET", "/api/v1/projects", rule(Read, Unscoped)),
        // Commands.
        ("POST", "/api/v1/technologies", rule(Write, Body)),
        (
            "PATCH",
            "/api/v1/technologies/{id}",
            rule(Write, on(Technology)),
        ),
        (
            "DELETE",
            "/api/v1/technologies/{id}",
            rule(Write, on(Technology)),
        ),
        ("POST", "/api/v1/jobs", rule(Write, Body)),
        ("PATCH", "/api/v1/jobs/{id}", rule(Write, on(Job))),
        ("DELETE", "/api/v1/jobs/{id}", rule(Write, on(Job))),
        ("POST", "/api/v1/jobs/{id}/dispatch", rule(Write, on(Job))),
        ("POST", "/api/v1/jobs/{id}/cancel", rule(Write, on(Job))),
        // Audit.
        (
            "GET",
            "/api/v1/technologies/{id}/history",
            rule(Audit, on(Technology)),
        ),
        ("GET", "/api/v1/jobs/{id}/history", rule(Audit, on(Job))),
        ("GET", "/api/v1/events", rule(Audit, Query)),
        ("GET", "/api/v1/audit/verify", rule(Audit, Query)),
        // Administration.
        ("GET", "/api/v1/keys", rule(Admin, Unscoped)),
        ("POST", "/api/v1/keys", rule(Admin, Unscoped)),
        ("DELETE", "/api/v1/keys/{id}", rule(Admin, Unscoped)),
        ("POST", "/api/v1/projects", rule(DeploymentAdmin, Unscoped)),
    ]
};

/// The rule for a route missing from [`RULES`]: deployment-wide admins only.
pub const CLOSED: Rule = rule(Access::DeploymentAdmin, Scope::Unscoped);

/// The rule of `method` on the route template `path` (HEAD is served by GET handlers, so
/// it has GET's rule).
pub fn rule_for(method: &Method, path: &str) -> Rule {
    let method = if method == Method::HEAD {
        Method::GET.as_str()
    } else {
        method.as_str()
    };
    RULES
        .iter()
        .find(|(m, p, _)| *p == path && method == *m)
        .map_or(CLOSED, |(_, _, rule)| *rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: Role, project: Option<i64>) -> Principal {
        Principal {
            key_id: "0123456789abcdef".into(),
            role,
            project,
            expires_at: None,
        }
    }

    #[test]
    fn roles_reach_what_the_table_says() {
        let reader = key(Role::Reader, Some(1));
        let writer = key(Role::Writer, Some(1));
        let auditor = key(Role::Auditor, Some(1));
        let admin = key(Role::Admin, Some(1));
        let root = key(Role::Admin, None);
        assert!(Access::Read.allows(&reader));
        assert!(!Access::Write.allows(&reader) && !Access::Audit.allows(&reader));
        assert!(Access::Write.allows(&writer) && !Access::Audit.allows(&writer));
        assert!(Access::Audit.allows(&auditor) && !Access::Write.allows(&auditor));
        assert!(!Access::Admin.allows(&auditor));
        assert!(Access::Admin.allows(&admin) && !Access::DeploymentAdmin.allows(&admin));
        assert!(Access::DeploymentAdmin.allows(&root));
    }

    #[test]
    fn unknown_routes_are_closed() {
        assert_eq!(rule_for(&Method::GET, "/api/v1/secret"), CLOSED);
        assert_eq!(rule_for(&Method::PUT, "/api/v1/jobs"), CLOSED);
        assert_eq!(rule_for(&Method::GET, "/api/v1/jobs").scope, Scope::Query);
        assert_eq!(rule_for(&Method::HEAD, "/api/v1/jobs").scope, Scope::Query);
        assert_eq!(rule_for(&Method::HEAD, "/metrics").access, Access::Public);
    }
}
