//! The dashboard served at `GET /` on the admin port: one self-contained
//! page (inline CSS and JS, no external assets) that refreshes itself from
//! `/status` and `/metrics`, with buttons that restart, disable and enable
//! one backend through the same POST endpoints as the CLI (same origin; a
//! token pasted in the page is kept in the tab's sessionStorage only).

/// The page, as served.
pub const PAGE: &str = include_str!("dashboard.html");
