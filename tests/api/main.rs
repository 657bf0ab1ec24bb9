//! End-to-end tests against the real PostgreSQL and NATS, one crate for fast linking.
//! Each test starts the service on its own database and NATS prefix.

mod access;
pub(crate) mod audit;
mod browser;
mod chaos;
mod compat;
mod concurrency;
mod demo;
mod edges;
mod feed_ordering;
mod fuzz;
mod group_commit;
mod hash_chain;
mod health;
mod helpers;
mod idempotency;
mod jobs;
mod observability;
mod openapi;
#[path = "../shared/oracle.rs"]
mod oracle;
mod projections;
mod properties;
mod queries;
mod tamper;
mod technologies;
mod validation;
mod web;
mod websockets;
mod workers;
