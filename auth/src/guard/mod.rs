//! The guard: one middleware every routed request passes (installed with
//! `Router::route_layer`, so it sees the route template), driven by the table in
//! [`crate::policy`].
//!
//! In order: the rule of the route; a public route passes. Otherwise the bearer key is
//! authenticated (401), its rate limit taken (429 with `Retry-After`), its role checked
//! (403), and the request kept to its project: list filters are rewritten to the key's
//! project, and an aggregate of another project is a 404, as if it did not exist. Sockets
//! take a slot of the key's socket budget (429). The handler then gets a [`Caller`], and
//! the whole request a time limit (503).
//!
//! By concern: `budgets` (a key's session: socket and subscription budgets), `limits`
//! (its rate), `principals` and `owners` (what is remembered of keys and aggregates),
//! `revocation` (closing a revoked key's sockets), `caller` (what handlers get).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use sqlx::PgPool;

use crate::policy::{rule_for, Access, Rule, Scope};
use crate::{AccessError, KeyStore, ProjectStore};

mod budgets;
mod caller;
mod limits;
mod owners;
mod principals;
mod revocation;

pub use budgets::{KeySession, SocketPermit, SubscriptionBudget};
pub use caller::Caller;
pub use revocation::{announce_revocation, revocation_subject};

/// Query parameters that turn a detail read into time travel.
const TIME_TRAVEL_PARAMS: [&str; 3] = ["as_of", "as_of_position", "as_of_version"];

/// The guard's limits.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Sustained requests per second per key; 0 turns rate limiting off.
    pub rate_per_second: f64,
    /// Requests a key may make at once after being idle.
    pub burst: f64,
    /// The longest a request may take to produce its response.
    pub request_timeout: Duration,
    /// Most WebSockets open at once per key.
    pub max_sockets_per_key: usize,
    /// Most WebSocket subscriptions (topics) at once per key, across its sockets.
    pub max_subscriptions_per_key: usize,
    /// How often revocations and expiries are looked for in the database.
    pub revocation_poll: Duration,
    /// How long an authenticated key is trusted before it is read again.
    pub principal_ttl: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            rate_per_second: 100.0,
            burst: 200.0,
            request_timeout: Duration::from_secs(40),
            max_sockets_per_key: 64,
            max_subscriptions_per_key: 1000,
            revocation_poll: Duration::from_secs(2),
            principal_ttl: Duration::from_secs(60),
        }
    }
}

struct Inner {
    keys: KeyStore,
    projects: ProjectStore,
    config: GuardConfig,
    /// Keys recently authenticated, by the hash of their token.
    principals: principals::Principals,
    sessions: DashMap<String, Arc<KeySession>>,
    /// The project of each aggregate asked about.
    owners: owners::Owners,
}

/// The guard (cheap to clone).
#[derive(Clone)]
pub struct Guard(Arc<Inner>);

impl Guard {
    /// A guard reading keys, projects and aggregate owners from `pool` (the primary).
    pub fn new(pool: PgPool, config: GuardConfig) -> Self {
        Self(Arc::new(Inner {
            keys: KeyStore::new(pool.clone()),
            projects: ProjectStore::new(pool.clone()),
            principals: principals::Principals::new(config.principal_ttl),
            owners: owners::Owners::new(pool),
            config,
            sessions: DashMap::new(),
        }))
    }

    /// The key table.
    pub fn keys(&self) -> &KeyStore {
        &self.0.keys
    }

    /// The project registry.
    pub fn projects(&self) -> &ProjectStore {
        &self.0.projects
    }

    /// The middleware: see the module documentation.
    pub async fn enforce(
        axum::extract::State(guard): axum::extract::State<Guard>,
        request: Request,
        next: Next,
    ) -> Response {
        let limit = guard.0.config.request_timeout;
        match guard.admit(request).await {
            Ok(request) => match tokio::time::timeout(limit, next.run(request)).await {
                Ok(response) => response,
                Err(_) => AccessError::Timeout(limit.as_millis()).into_response(),
            },
            Err(refusal) => refusal.into_response(),
        }
    }

    async fn admit(&self, request: Request) -> Result<Request, AccessError> {
        let template = request
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let rule = rule_for(request.method(), &template);
        if rule.access == Access::Public {
            return Ok(request);
        }
        let (mut parts, body) = request.into_parts();
        let token = bearer(&parts, rule).ok_or(AccessError::Unauthenticated(
            "missing API key: send Authorization: Bearer <key>",
        ))?;
        let principal = self
            .authenticate(&token)
            .await?
            .ok_or(AccessError::Unauthenticated(
                "the API key is invalid, revoked or expired",
            ))?;
        let session = self.session(&principal.key_id);
        if session.is_revoked() {
            return Err(AccessError::Unauthenticated(
                "the API key is invalid, revoked or expired",
            ));
        }
        session.rate.take()?;
        let needs = if rule.time_travel && has_any_param(parts.uri.query(), &TIME_TRAVEL_PARAMS) {
            Access::Audit
        } else {
            rule.access
        };
        if !needs.allows(&principal) {
            return Err(AccessError::Forbidden {
                role: principal.role,
                needs: needs.needs(),
            });
        }
        // Path parameters, read once. No id contains control characters (PostgreSQL text
        // cannot even hold NUL): such a path names nothing.
        let params = RawPathParams::from_request_parts(&mut parts, &())
            .await
            .ok();
        let params: Vec<(String, String)> = params
            .iter()
            .flat_map(|p| p.iter())
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        if params
            .iter()
            .any(|(_, value)| value.chars().any(char::is_control))
        {
            return Err(AccessError::NotFound("resource"));
        }
        match (rule.scope, principal.project) {
            (Scope::Query, Some(project)) => {
                parts.uri =
                    with_project(&parts.uri, project).ok_or_else(|| AccessError::Invalid {
                        field: "query".into(),
                        message: "the query string cannot be read".into(),
                    })?;
            }
            (Scope::Resource { kind, param }, Some(project)) => {
                let id = params
                    .iter()
                    .find(|(name, _)| name == param)
                    .map_or("", |(_, value)| value.as_str());
                if self.owner(kind, id).await? != Some(project) {
                    return Err(AccessError::NotFound(kind.aggregate_type()));
                }
            }
            _ => {}
        }
        let socket = if rule.socket {
            Some(Arc::new(session.open_socket().ok_or_else(|| {
                AccessError::TooMany(format!(
                    "this API key already has {} WebSockets open",
                    self.0.config.max_sockets_per_key
                ))
            })?))
        } else {
            None
        };
        parts.extensions.insert(Caller {
            principal,
            session,
            guard: self.clone(),
            _socket: socket,
        });
        Ok(Request::from_parts(parts, body))
    }

    /// The key's session in this process, made on first use.
    fn session(&self, key_id: &str) -> Arc<KeySession> {
        self.0
            .sessions
            .entry(key_id.to_string())
            .or_insert_with(|| Arc::new(KeySession::new(&self.0.config)))
            .clone()
    }
}

/// The key presented: `Authorization: Bearer <key>`, or for sockets `access_token` in
/// the query.
fn bearer(parts: &Parts, rule: Rule) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let text = value.to_str().ok()?.trim();
        let (scheme, token) = text.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string())
            .filter(|t| !t.is_empty());
    }
    if rule.socket {
        let query = parts.uri.query()?;
        return form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "access_token")
            .map(|(_, value)| value.into_owned());
    }
    None
}

fn has_any_param(query: Option<&str>, names: &[&str]) -> bool {
    query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(name, _)| names.contains(&name.as_ref()))
    })
}

/// `uri` with every `project_id` in its query replaced by one naming `project`.
fn with_project(uri: &Uri, project: i64) -> Option<Uri> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        if name != "project_id" {
            query.append_pair(&name, &value);
        }
    }
    query.append_pair("project_id", &project.to_string());
    let path_and_query = format!("{}?{}", uri.path(), query.finish());
    Uri::builder().path_and_query(path_and_query).build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_filters_are_replaced_whatever_their_spelling() {
        let uri: Uri = "/api/v1/jobs?project_id=2&limit=5&project%5Fid=3&project_id=4&q=a+b"
            .parse()
            .unwrap();
        let rewritten = with_project(&uri, 7).unwrap();
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(rewritten.query().unwrap().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        assert_eq!(rewritten.path(), "/api/v1/jobs");
        assert_eq!(
            pairs,
            vec![
                ("limit".into(), "5".into()),
                ("q".into(), "a b".into()),
                ("project_id".into(), "7".into())
            ]
        );
    }

    #[test]
    fn time_travel_is_recognised() {
        assert!(has_any_param(Some("as_of_version=3"), &TIME_TRAVEL_PARAMS));
        assert!(has_any_param(Some("x=1&as%5Fof=2020"), &TIME_TRAVEL_PARAMS));
        assert!(!has_any_param(Some("as_ofx=1"), &TIME_TRAVEL_PARAMS));
        assert!(!has_any_param(None, &TIME_TRAVEL_PARAMS));
    }
}
