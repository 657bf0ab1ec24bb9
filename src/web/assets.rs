//! The embedded build output of `web/` and the routes that serve it. The files are the
//! ones committed under `web/dist/`; `npm run build` in `web/` writes them, and the
//! test `the_committed_dashboard_build_matches_its_sources` fails when they are stale.

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// What the page may load and connect to: this origin only (CSP level 3 `'self'`
/// covers `ws:`/`wss:` to the same host), no inline script or style, no plugins, no
/// framing, no `<base>` tricks, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The API reference's policy: the dashboard's, but Swagger UI's stylesheet draws its
/// icons as `data:` images.
pub const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its name under `/assets/`, media type and bytes.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("../../web/dist/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dist/assets/app.js"),
    },
    Asset {
        name: "app.css",
        media_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/dist/assets/app.css"),
    },
    Asset {
        name: "favicon.svg",
        media_type: "image/svg+xml",
        body: include_bytes!("../../web/dist/assets/favicon.svg"),
    },
];

const DOCS_INDEX: &[u8] = include_bytes!("../../web/dist/docs/index.html");

/// The API reference's files (`/docs/assets/…`): Swagger UI from `swagger-ui-dist` and
/// the script that starts it on `/api/v1/openapi.json`.
const DOCS_ASSETS: &[Asset] = &[
    Asset {
        name: "swagger-ui-bundle.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dist/docs/assets/swagger-ui-bundle.js"),
    },
    Asset {
        name: "swagger-ui.css",
        media_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/dist/docs/assets/swagger-ui.css"),
    },
    Asset {
        name: "swagger-ui-LICENSE.txt",
        media_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../web/dist/docs/assets/swagger-ui-LICENSE.txt"),
    },
    Asset {
        name: "docs.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dist/docs/assets/docs.js"),
    },
    Asset {
        name: "docs.css",
        media_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/dist/docs/assets/docs.css"),
    },
];

/// The page's routes. They are public in the guard's policy table (the page holds no
/// data) and not API operations, so they are not in the OpenAPI document.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/docs", get(docs))
        .route("/docs/assets/{file}", get(docs_asset))
}

async fn index() -> Response {
    page(
        StatusCode::OK,
        "text/html; charset=utf-8",
        INDEX,
        CONTENT_SECURITY_POLICY,
    )
}

async fn asset(Path(file): Path<String>) -> Response {
    serve(ASSETS, &file, CONTENT_SECURITY_POLICY)
}

async fn docs() -> Response {
    page(
        StatusCode::OK,
        "text/html; charset=utf-8",
        DOCS_INDEX,
        DOCS_CONTENT_SECURITY_POLICY,
    )
}

async fn docs_asset(Path(file): Path<String>) -> Response {
    serve(DOCS_ASSETS, &file, DOCS_CONTENT_SECURITY_POLICY)
}

/// Asset `file` of `assets`, or a 404, under `policy`.
fn serve(assets: &[Asset], file: &str, policy: &'static str) -> Response {
    match assets.iter().find(|a| a.name == file) {
        Some(asset) => page(StatusCode::OK, asset.media_type, asset.body, policy),
        None => page(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            b"no such asset\n",
            policy,
        ),
    }
}

/// A response with the page's security headers, `policy` its Content-Security-Policy.
/// Assets are revalidated on every load (`no-cache` with an `ETag` would need hashing;
/// the files are small and local).
fn page(
    status: StatusCode,
    media_type: &'static str,
    body: &'static [u8],
    policy: &'static str,
) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
