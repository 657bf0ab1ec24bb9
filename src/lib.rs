//! The `commandcenter` binary's library: configuration, start-up and the operator
//! commands, kept out of `main.rs` so the integration tests start the very same service.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod database;
pub mod demo;
pub mod health;
pub mod listener;
pub mod observability;
pub mod openapi;
pub mod startup;
pub mod telemetry;
pub mod web;
