//! Statements of the read endpoints that are built from a request's filters, apart from
//! the handlers (which parse, call and answer). Each returns a `QueryBuilder` whose
//! values are all bound.

pub(crate) mod technologies;
