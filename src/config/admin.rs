//! `[admin]`: the admin HTTP port's address and the bearer token its POST
//! endpoints require (read from `token_file` at load).

use std::path::PathBuf;

use toml::Spanned;

use super::defaults;
use super::error::Problems;
use super::files::read_file;
use super::raw::RawAdmin;
use super::types::AdminConfig;
use super::values::socket_addr;

/// Validates `[admin]`, reading the token file.
pub fn validate(raw: RawAdmin, p: &mut Problems) -> AdminConfig {
    AdminConfig {
        bind: raw
            .bind
            .map(|b| socket_addr(&b, "admin.bind", p))
            .unwrap_or(Some(defaults::ADMIN_BIND))
            .unwrap_or(defaults::ADMIN_BIND),
        token: raw
            .token_file
            .filter(|f| !f.get_ref().is_empty())
            .and_then(|f| read_token(&f, p)),
    }
}

fn read_token(file: &Spanned<String>, p: &mut Problems) -> Option<String> {
    let path = PathBuf::from(file.get_ref());
    match read_file(&path) {
        Ok(text) if text.trim().is_empty() => {
            p.at(
                file.span(),
                "admin.token_file",
                format!("{} is empty", path.display()),
            );
            None
        }
        Ok(text) => Some(text.trim().to_string()),
        Err(why) => {
            p.at(
                file.span(),
                "admin.token_file",
                format!("{}: {why}", path.display()),
            );
            None
        }
    }
}
