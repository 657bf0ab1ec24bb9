//! The write side's clock. Command times are cut to whole microseconds, PostgreSQL's
//! precision, so a time read back from any table equals the time in the event exactly.

use chrono::{DateTime, SubsecRound, Utc};

/// Now, to the microsecond.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
