//! `[[backends]]`: static upstreams, each with a unique printable name and
//! an address resolved at load.

use std::collections::HashSet;

use toml::Spanned;

use super::error::Problems;
use super::raw::RawBackend;
use super::types::StaticBackend;
use super::values::{resolve, send_proxy};

/// Validates every `[[backends]]` entry.
pub fn validate(raw: Vec<Spanned<RawBackend>>, p: &mut Problems) -> Vec<StaticBackend> {
    let mut names = HashSet::new();
    raw.into_iter()
        .filter_map(|b| {
            let span = b.span();
            let b = b.into_inner();
            let name = name(b.name, &span, &mut names, p);
            let address = match b.address {
                Some(a) => resolve(&a, "backends.address", p),
                None => {
                    p.at(
                        span,
                        "backends.address",
                        "every [[backends]] entry needs an address",
                    );
                    None
                }
            };
            Some(StaticBackend {
                name: name?,
                address: address?,
                send_proxy: send_proxy(b.send_proxy),
            })
        })
        .collect()
}

/// `backends.name`: present, printable, unique, not a worker's.
fn name(
    name: Option<Spanned<String>>,
    entry: &std::ops::Range<usize>,
    names: &mut HashSet<String>,
    p: &mut Problems,
) -> Option<String> {
    match name {
        Some(n) if n.get_ref().trim().is_empty() => {
            p.at(n.span(), "backends.name", "must not be empty");
            None
        }
        Some(n) if n.get_ref().chars().any(crate::terminal::is_unsafe) => {
            p.at(
                n.span(),
                "backends.name",
                format!(
                    "`{}` contains a control character: names are printable text (no escape sequences, bidi overrides or line breaks)",
                    crate::terminal::escape(n.get_ref())
                ),
            );
            None
        }
        Some(n) if n.get_ref().starts_with("worker-") => {
            p.at(
                n.span(),
                "backends.name",
                "names starting with `worker-` are reserved for workers",
            );
            None
        }
        Some(n) if !names.insert(n.get_ref().clone()) => {
            p.at(
                n.span(),
                "backends.name",
                format!("`{}` is used by another backend", n.get_ref()),
            );
            None
        }
        Some(n) => Some(n.into_inner()),
        None => {
            p.at(
                entry.clone(),
                "backends.name",
                "every [[backends]] entry needs a name",
            );
            None
        }
    }
}
