//! The API key every request and socket of a run carries (`--api-key` / `CC_API_KEY`).

use std::sync::OnceLock;

static KEY: OnceLock<Option<String>> = OnceLock::new();

/// Sets the key for this run (once, at start).
pub fn init(key: Option<String>) {
    let _ = KEY.set(key.filter(|k| !k.is_empty()));
}

fn key() -> Option<&'static str> {
    KEY.get().and_then(|k| k.as_deref())
}

/// A client builder that sends `Authorization: Bearer <key>`.
pub fn client_builder() -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = key().and_then(|k| format!("Bearer {k}").parse().ok()) {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder().default_headers(headers)
}

/// A client that sends the key.
pub fn client() -> reqwest::Client {
    client_builder().build().unwrap_or_default()
}

/// `url` with the key as `access_token` (how sockets carry it).
pub fn ws(url: String) -> String {
    match key() {
        Some(key) if url.contains('?') => format!("{url}&access_token={key}"),
        Some(key) => format!("{url}?access_token={key}"),
        None => url,
    }
}
