//! The dashboard served at `GET /` on the admin port: one self-contained
//! page (inline CSS and JS, no external assets) that refreshes itself from
//! `/status` and `/metrics`.

/// The page, as served.
pub const PAGE: &str = include_str!("dashboard.html");
