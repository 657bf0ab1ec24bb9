//! Specifications of the `Job` aggregate (`cqrs-es` `TestFramework`), by theme.

mod cancel;
mod delete;
mod fixtures;
mod lifecycle;
mod patch;
mod replay;
mod retry;
mod workers;
