//! The operator's commands on one backend, behind `POST
//! /workers/restart?name=NAME`, `POST /workers/disable?name=NAME` and
//! `POST /workers/enable?name=NAME`: finding the backend by name (an
//! unknown name is answered with the names there are), and asking its
//! owner for the change. A disable or enable is a transition of the
//! backend's own state machine ([`crate::pool::Backend::disable`]); a
//! restart of one worker is asked of the control loop, which owns
//! rollouts, as a whole rolling restart is.
//!
//! Answers are (status, JSON body) pairs for the admin server to send:
//! 202 when done or started, 400 without `?name=`, 404 for an unknown
//! name, 409 for a restart of a static backend (corral runs no process
//! for it), 503 while corral is stopping.

use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::Request as ControlRequest;
use crate::pool::Kind;
use crate::shared::Shared;

/// What is asked of the one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Restart,
    Disable,
    Enable,
}

impl Action {
    /// The action of an admin path, if it is one of these.
    pub fn of_path(path: &str) -> Option<Action> {
        match path {
            "/workers/restart" => Some(Action::Restart),
            "/workers/disable" => Some(Action::Disable),
            "/workers/enable" => Some(Action::Enable),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Disable => "disable",
            Action::Enable => "enable",
        }
    }
}

/// Carries out `action` on the backend called `name`.
pub async fn one(
    shared: &Shared,
    control: &mpsc::Sender<ControlRequest>,
    action: Action,
    name: Option<String>,
) -> (StatusCode, Value) {
    let verb = action.as_str();
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return refused(
            StatusCode::BAD_REQUEST,
            verb,
            "missing ?name=NAME: a backend from corral status (worker-0, worker-1, ...)".into(),
        );
    };
    let snapshot = shared.snapshot();
    let Some(backend) = snapshot.pool.by_label(&name) else {
        let known: Vec<&str> = snapshot
            .pool
            .backends
            .iter()
            .filter(|b| action != Action::Restart || matches!(b.kind, Kind::Worker(_)))
            .map(|b| b.label.as_str())
            .collect();
        let mut body = refused(StatusCode::NOT_FOUND, verb, unknown(&name, &known)).1;
        body["known"] = json!(known);
        return (StatusCode::NOT_FOUND, body);
    };
    match action {
        Action::Disable => {
            let changed = backend.disable();
            tracing::info!(backend = %name, changed, "admin request: disable; out of rotation, open connections finish");
            done(verb, &name, "disabled", changed)
        }
        Action::Enable => {
            let changed = backend.enable();
            tracing::info!(backend = %name, changed, "admin request: enable; back in rotation");
            done(verb, &name, backend.state().as_str(), changed)
        }
        Action::Restart => match backend.kind {
            Kind::Worker(id) => restart(control, id, &name).await,
            Kind::Static => refused(
                StatusCode::CONFLICT,
                verb,
                format!("{name} is a static backend ([[backends]]): corral runs no process for it and cannot restart it; name a worker (worker-0, ...), or use corral disable {name} to take it out of rotation"),
            ),
        },
    }
}

/// Asks the control loop to replace worker `id` the rolling way.
async fn restart(
    control: &mpsc::Sender<ControlRequest>,
    id: usize,
    name: &str,
) -> (StatusCode, Value) {
    let (started, answer) = oneshot::channel();
    if control
        .send(ControlRequest::RestartWorker { id, started })
        .await
        .is_err()
    {
        return stopping();
    }
    match answer.await {
        Ok(true) => {
            tracing::info!(backend = %name, "admin request: restart of one worker");
            (
                StatusCode::ACCEPTED,
                json!({"restart": "started", "backend": name}),
            )
        }
        Ok(false) => refused(
            StatusCode::CONFLICT,
            "restart",
            format!("{name} is being retired (a scale-down); there is nothing to restart"),
        ),
        Err(_) => stopping(),
    }
}

/// The text for a name that is not a backend's.
fn unknown(name: &str, known: &[&str]) -> String {
    if known.is_empty() {
        format!("no backend named {name:?}, and there is none to name")
    } else {
        format!(
            "no backend named {name:?}; the names are: {}",
            known.join(", ")
        )
    }
}

fn done(verb: &str, name: &str, state: &str, changed: bool) -> (StatusCode, Value) {
    (
        StatusCode::ACCEPTED,
        json!({verb: "done", "backend": name, "state": state, "changed": changed}),
    )
}

fn refused(status: StatusCode, verb: &str, why: String) -> (StatusCode, Value) {
    (status, json!({verb: "refused", "error": why}))
}

fn stopping() -> (StatusCode, Value) {
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "restart",
        "corral is stopping".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_name_is_answered_with_the_names_there_are() {
        let text = unknown("worker-9", &["worker-0", "worker-1"]);
        assert!(text.contains("\"worker-9\""), "{text}");
        assert!(text.contains("worker-0, worker-1"), "{text}");
        assert!(unknown("x", &[]).contains("none"));
    }

    #[test]
    fn only_the_three_paths_are_actions() {
        assert_eq!(Action::of_path("/workers/disable"), Some(Action::Disable));
        assert_eq!(Action::of_path("/workers/enable"), Some(Action::Enable));
        assert_eq!(Action::of_path("/workers/restart"), Some(Action::Restart));
        assert_eq!(Action::of_path("/workers/scale"), None);
    }
}
