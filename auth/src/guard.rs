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
//! Revocation: `keys revoke` (CLI or HTTP) publishes the key id on
//! `<prefix>.keys.revoked`; every server also polls for keys revoked or expired since its
//! last look. Either way the key's cached authentication is dropped and its open sockets
//! are told to close.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::policy::{rule_for, Access, Kind, Rule, Scope};
use crate::{AccessError, KeyStore, Principal, ProjectStore};

/// Query parameters that turn a detail read into time travel.
const TIME_TRAVEL_PARAMS: [&str; 3] = ["as_of", "as_of_position", "as_of_version"];
/// Most aggregate owners remembered before the memory is cleared.
const MAX_OWNERS: usize = 200_000;

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

/// The subject revocations are announced on.
pub fn revocation_subject(prefix: &str) -> String {
    format!("{prefix}.keys.revoked")
}

/// Announces that `key_id` was revoked, so servers close its sockets at once (they would
/// otherwise notice within their poll interval).
pub async fn announce_revocation(
    nats: &async_nats::Client,
    prefix: &str,
    key_id: &str,
) -> Result<(), async_nats::Error> {
    nats.publish(revocation_subject(prefix), key_id.to_string().into())
        .await?;
    nats.flush().await?;
    Ok(())
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A key's live state in this process: the revocation signal its sockets wait on, and
/// its socket and subscription counts.
pub struct KeySession {
    revoked: watch::Sender<bool>,
    bucket: std::sync::Mutex<Bucket>,
    sockets: AtomicUsize,
    subscriptions: AtomicUsize,
    max_sockets: usize,
    max_subscriptions: usize,
}

impl KeySession {
    /// Completes when the key is revoked or expires (at once if it already is).
    pub fn until_revoked(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut revoked = self.revoked.subscribe();
        async move {
            let _ = revoked.wait_for(|r| *r).await;
        }
    }

    fn open_socket(self: &Arc<Self>) -> Option<SocketPermit> {
        let taken = self
            .sockets
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sockets).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| SocketPermit(self.clone()))
    }

    /// A budget of subscriptions for one socket, drawn from the key's.
    pub fn subscription_budget(self: &Arc<Self>) -> SubscriptionBudget {
        SubscriptionBudget {
            session: self.clone(),
            held: 0,
        }
    }
}

/// One of the key's socket slots, given back when dropped.
pub struct SocketPermit(Arc<KeySession>);

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.0.sockets.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The subscriptions one socket holds of its key's budget, given back when dropped.
pub struct SubscriptionBudget {
    session: Arc<KeySession>,
    held: usize,
}

impl SubscriptionBudget {
    /// Makes this socket hold exactly `n` of the key's subscriptions (its topic count);
    /// `false`, holding what it held, if the key has not that many left.
    pub fn settle(&mut self, n: usize) -> bool {
        if n < self.held {
            self.session
                .subscriptions
                .fetch_sub(self.held - n, Ordering::AcqRel);
            self.held = n;
            return true;
        }
        let more = n - self.held;
        let max = self.session.max_subscriptions;
        let taken = self
            .session
            .subscriptions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + more <= max).then_some(held + more)
            })
            .is_ok();
        if taken {
            self.held = n;
        }
        taken
    }
}

impl Drop for SubscriptionBudget {
    fn drop(&mut self) {
        self.session
            .subscriptions
            .fetch_sub(self.held, Ordering::AcqRel);
    }
}

struct Inner {
    keys: KeyStore,
    projects: ProjectStore,
    pool: PgPool,
    config: GuardConfig,
    /// sha256(token) → principal and when it was read (tokens themselves are not kept).
    principals: DashMap<[u8; 32], (Arc<Principal>, Instant)>,
    sessions: DashMap<String, Arc<KeySession>>,
    owners: DashMap<(Kind, String), i64>,
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
            pool,
            config,
            principals: DashMap::new(),
            sessions: DashMap::new(),
            owners: DashMap::new(),
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
        if *session.revoked.borrow() {
            return Err(AccessError::Unauthenticated(
                "the API key is invalid, revoked or expired",
            ));
        }
        self.take_token(&session)?;
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

    /// The principal of `token`, from memory when read recently.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Arc<Principal>>, AccessError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(entry) = self.0.principals.get(&digest) {
            let (principal, read) = entry.value();
            if read.elapsed() < self.0.config.principal_ttl {
                return Ok((!principal.expired_at(Utc::now())).then(|| principal.clone()));
            }
        }
        let Some(principal) = self.0.keys.authenticate(token).await? else {
            self.0.principals.remove(&digest);
            return Ok(None);
        };
        // Revoked while it was being read: never cache it.
        if self.is_revoked(&principal.key_id) {
            return Ok(None);
        }
        let principal = Arc::new(principal);
        self.0
            .principals
            .insert(digest, (principal.clone(), Instant::now()));
        Ok(Some(principal))
    }

    fn take_token(&self, session: &KeySession) -> Result<(), AccessError> {
        let config = &self.0.config;
        if config.rate_per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let burst = config.burst.max(1.0);
        let mut bucket = session
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * config.rate_per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / config.rate_per_second;
        Err(AccessError::RateLimited {
            retry_after_secs: wait.ceil().max(1.0) as u64,
        })
    }

    fn session(&self, key_id: &str) -> Arc<KeySession> {
        self.0
            .sessions
            .entry(key_id.to_string())
            .or_insert_with(|| {
                Arc::new(KeySession {
                    revoked: watch::channel(false).0,
                    bucket: std::sync::Mutex::new(Bucket {
                        tokens: self.0.config.burst.max(1.0),
                        updated: Instant::now(),
                    }),
                    sockets: AtomicUsize::new(0),
                    subscriptions: AtomicUsize::new(0),
                    max_sockets: self.0.config.max_sockets_per_key,
                    max_subscriptions: self.0.config.max_subscriptions_per_key,
                })
            })
            .clone()
    }

    /// The project an aggregate belongs to (from its first event), if it exists.
    pub async fn owner(&self, kind: Kind, id: &str) -> Result<Option<i64>, AccessError> {
        if commandcenter_domain::values::AggregateId::parse(id).is_none() {
            return Ok(None);
        }
        let key = (kind, id.to_string());
        if let Some(project) = self.0.owners.get(&key) {
            return Ok(Some(*project));
        }
        let first: Option<(String, String, serde_json::Value, Option<i64>)> = sqlx::query_as(
            "SELECT event_type, event_version, payload, cc_event_project(metadata) \
               FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
        )
        .bind(kind.aggregate_type())
        .bind(id)
        .fetch_optional(&self.0.pool)
        .await?;
        let project = match (kind, first) {
            (_, None) => None,
            // The domain says which project a job belongs to (its parameters may name
            // others); a technology belongs to the project its first event names.
            (Kind::Job, Some((event_type, version, payload, named))) => {
                match serde_json::from_value::<commandcenter_domain::job::JobEvent>(
                    commandcenter_domain::upcast_payload(&event_type, &version, payload),
                ) {
                    Ok(event) => event.owning_project().map(|p| p.get()),
                    // An event this version cannot read (a newer writer's): the project its
                    // metadata names.
                    Err(err) => {
                        tracing::warn!(%err, job_id = id, "cannot read a job's first event; using its metadata's project");
                        named
                    }
                }
            }
            (_, Some((_, _, _, project))) => project,
        };
        if let Some(project) = project {
            // An aggregate never changes project, so the answer may be kept.
            if self.0.owners.len() >= MAX_OWNERS {
                self.0.owners.clear();
            }
            self.0.owners.insert(key, project);
        }
        Ok(project)
    }

    /// Forgets everything known about `key_id` and tells its sockets to close. The key's
    /// session stays, marked revoked, so a request that authenticated just before is
    /// still refused when it reaches its session.
    pub fn forget(&self, key_id: &str) {
        self.session(key_id).revoked.send_replace(true);
        self.0
            .principals
            .retain(|_, (principal, _)| principal.key_id != key_id);
    }

    fn is_revoked(&self, key_id: &str) -> bool {
        self.0
            .sessions
            .get(key_id)
            .is_some_and(|session| *session.revoked.borrow())
    }

    /// Revokes a key, here at once and on other servers through `nats` (when given).
    pub async fn revoke(
        &self,
        key_id: &str,
        nats: Option<(&async_nats::Client, &str)>,
    ) -> Result<Option<crate::ApiKey>, AccessError> {
        let revoked = self.0.keys.revoke(key_id).await?;
        if revoked.is_some() {
            self.forget(key_id);
            if let Some((client, prefix)) = nats {
                if let Err(err) = announce_revocation(client, prefix, key_id).await {
                    tracing::warn!(%err, key_id, "revocation not announced; other servers notice it by polling");
                }
            }
        }
        Ok(revoked)
    }

    /// Applies revocations as they are announced on NATS, and polls the database for
    /// revocations and expiries, until `shutdown`.
    pub async fn watch_revocations(
        self,
        nats: async_nats::Client,
        prefix: String,
        shutdown: CancellationToken,
    ) {
        let mut announced = match nats.subscribe(revocation_subject(&prefix)).await {
            Ok(subscriber) => Some(subscriber),
            Err(err) => {
                tracing::warn!(%err, "cannot subscribe to key revocations; polling only");
                None
            }
        };
        let mut since: Option<DateTime<Utc>> = None;
        let mut every = tokio::time::interval(self.0.config.revocation_poll);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                message = async {
                    match announced.as_mut() {
                        Some(s) => futures::StreamExt::next(s).await,
                        None => std::future::pending().await,
                    }
                } => match message {
                    Some(message) => {
                        if let Ok(id) = std::str::from_utf8(&message.payload) {
                            self.forget(id.trim());
                        }
                    }
                    None => announced = None,
                },
                _ = every.tick() => {
                    let from = since.unwrap_or_else(Utc::now) - chrono::Duration::seconds(1);
                    match self.0.keys.ended_since(from).await {
                        Ok((ids, now)) => {
                            for id in ids {
                                self.forget(&id);
                            }
                            since = Some(now);
                        }
                        Err(err) => tracing::warn!(%err, "cannot poll for key revocations; will retry"),
                    }
                }
            }
        }
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

/// The key a request was admitted with: its principal, and its session in this process.
/// Handlers take it as an extractor; it exists on every route that is not public.
#[derive(Clone)]
pub struct Caller {
    principal: Arc<Principal>,
    session: Arc<KeySession>,
    guard: Guard,
    _socket: Option<Arc<SocketPermit>>,
}

impl Caller {
    /// Who is calling.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The key's id, recorded as `actor`.
    pub fn key_id(&self) -> &str {
        &self.principal.key_id
    }

    /// The key's live state (revocation signal, subscription budget).
    pub fn session(&self) -> &Arc<KeySession> {
        &self.session
    }

    /// Takes one request from the key's rate limit (for messages on an open socket).
    pub fn take_token(&self) -> Result<(), AccessError> {
        self.guard.take_token(&self.session)
    }

    /// Whether the key may see `project`'s data.
    pub fn sees_project(&self, project: i64) -> bool {
        self.principal.sees_project(project)
    }

    /// Whether the key may see the aggregate `id` (unknown aggregates: only
    /// deployment-wide keys).
    pub async fn sees(&self, kind: Kind, id: &str) -> Result<bool, AccessError> {
        match self.principal.project {
            None => Ok(true),
            Some(own) => Ok(self.guard.owner(kind, id).await? == Some(own)),
        }
    }

    /// The project a create command writes to: the body's `project_id`, defaulting to
    /// the key's project. Another project than the key's is a 404; a deployment-wide key
    /// must name a registered project.
    pub async fn project_for(&self, requested: Option<i64>) -> Result<i64, AccessError> {
        match (self.principal.project, requested) {
            (Some(own), None) => Ok(own),
            (Some(own), Some(asked)) if asked == own => Ok(own),
            (Some(_), Some(_)) => Err(AccessError::NotFound("project")),
            (None, None) => Err(AccessError::Invalid {
                field: "project_id".into(),
                message: "required with a deployment-wide key".into(),
            }),
            (None, Some(asked)) => {
                self.check_project("project_id", asked).await?;
                Ok(asked)
            }
        }
    }

    /// Checks that the key may use `project`, named in `field` (e.g. a batch job's
    /// projects): another project is a 404; for a deployment-wide key, an unregistered
    /// one is a 422.
    pub async fn check_project(&self, field: &str, project: i64) -> Result<(), AccessError> {
        match self.principal.project {
            Some(own) if own == project => Ok(()),
            Some(_) => Err(AccessError::NotFound("project")),
            None if self.guard.projects().exists(project).await? => Ok(()),
            None => Err(AccessError::UnknownProject {
                field: field.to_string(),
                project,
            }),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AccessError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(AccessError::Unauthenticated(
                "missing API key: send Authorization: Bearer <key>",
            ))
    }
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
