//! `[runtime]`: proxy threads, splice, and the user and group corral
//! drops to after binding (resolved to ids at load).

use toml::Spanned;

use super::defaults;
use super::error::Problems;
use super::raw::RawRuntime;
use super::types::{Privileges, RuntimeConfig};
use super::values::{cpus, int};

/// Validates `[runtime]`.
pub fn validate(raw: RawRuntime, p: &mut Problems) -> RuntimeConfig {
    let threads = int(
        raw.threads,
        "runtime.threads",
        0,
        1024,
        defaults::RUNTIME_THREADS,
        p,
    ) as usize;
    RuntimeConfig {
        threads: if threads == 0 { cpus() } else { threads },
        splice: raw.splice.unwrap_or(defaults::RUNTIME_SPLICE),
        drop_to: privileges(raw.user, raw.group, p),
    }
}

/// Resolves `runtime.user` and `runtime.group`; both need corral to start
/// as root, since only root can become someone else.
fn privileges(
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    p: &mut Problems,
) -> Option<Privileges> {
    use nix::unistd::{Group, User};
    let user = user.filter(|u| !u.get_ref().is_empty());
    let group = group.filter(|g| !g.get_ref().is_empty());
    if user.is_none() && group.is_none() {
        return None;
    }
    let found_user = match &user {
        Some(u) => match User::from_name(u.get_ref()) {
            Ok(Some(found)) => Some(found),
            _ => {
                p.at(
                    u.span(),
                    "runtime.user",
                    format!("no user `{}` on this system", u.get_ref()),
                );
                return None;
            }
        },
        None => None,
    };
    let gid = match &group {
        Some(g) => match Group::from_name(g.get_ref()) {
            Ok(Some(found)) => found.gid.as_raw(),
            _ => {
                p.at(
                    g.span(),
                    "runtime.group",
                    format!("no group `{}` on this system", g.get_ref()),
                );
                return None;
            }
        },
        None => found_user.as_ref()?.gid.as_raw(),
    };
    let wanted = Privileges {
        user: found_user.as_ref().map(|u| u.name.clone()),
        uid: found_user.map(|u| u.uid.as_raw()),
        gid,
    };
    // Only root can become someone else; a process that already is that
    // user (a reload after the drop) needs nothing.
    let already = wanted
        .uid
        .is_none_or(|uid| uid == nix::unistd::geteuid().as_raw())
        && wanted.gid == nix::unistd::getegid().as_raw();
    if !nix::unistd::geteuid().is_root() && !already {
        let (span, key) = match (&user, &group) {
            (Some(u), _) => (u.span(), "runtime.user"),
            (None, Some(g)) => (g.span(), "runtime.group"),
            (None, None) => return None,
        };
        p.at(
            span,
            key,
            "dropping privileges needs corral to be started as root",
        );
        return None;
    }
    Some(wanted)
}
