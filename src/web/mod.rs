//! The web dashboard, served by the binary itself: `GET /` and `GET /assets/{file}`
//! answer with the committed build output of `web/` (embedded at compile time, so a
//! fresh clone builds without Node.js and the page loads nothing from another host), and
//! `GET /api/v1/session` tells the page which role and project its key has.
//!
//! Every page and asset response carries a strict Content-Security-Policy (scripts and
//! styles from this origin only, no inline code, sockets back to this origin, never
//! framed), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`. The
//! page itself never needs a key; the data it shows does.

mod assets;
pub mod session;

pub use assets::router;

use std::io::Write;
use std::net::SocketAddr;

/// Prints where the dashboard is, for the operator who just started `serve`.
pub fn show_url(addr: SocketAddr) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Dashboard: http://{addr}/ (sign in with an API key, such as the first-start admin key)"
    )?;
    out.flush()
}
