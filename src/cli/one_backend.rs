//! The client side of the commands on one backend by name: `corral
//! restart NAME`, `corral disable NAME` and `corral enable NAME` (`POST
//! /workers/{restart,disable,enable}?name=NAME`). A name the running
//! corral does not know is an error that names it and lists the names
//! there are.

use super::{ask, escape, field, refusal, runtime, ClientError, Target};

/// `POST path?name=NAME` to the running corral: the answer's JSON on 202,
/// else the refusal as an error, `verb` leading it.
fn post(
    target: &Target,
    path: &str,
    verb: &str,
    name: &str,
) -> Result<serde_json::Value, ClientError> {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("name", name)
        .finish();
    let answer = runtime()?.block_on(ask(target, "POST", &format!("{path}?{query}")))?;
    if answer.status != 202 {
        return Err(ClientError::Refused(format!(
            "{verb} refused: {}",
            refusal(&answer)
        )));
    }
    Ok(serde_json::from_str(&answer.body).unwrap_or_default())
}

/// `corral restart NAME`: that worker replaced the rolling way.
pub(crate) fn restart_one(target: &Target, name: &str) -> Result<String, ClientError> {
    post(target, "/workers/restart", "restart", name)?;
    Ok(format!(
        "restarting {}: its replacement takes new connections once ready, then it drains",
        escape(name)
    ))
}

/// `corral disable NAME`: out of rotation, drained, process kept.
pub fn disable(target: &Target, name: &str) -> Result<String, ClientError> {
    let answer = post(target, "/workers/disable", "disable", name)?;
    let name = escape(name);
    Ok(if answer["changed"] == false {
        format!("{name} was disabled already")
    } else {
        format!("{name} disabled: no new connection goes to it, open ones finish; corral enable {name} puts it back")
    })
}

/// `corral enable NAME`: back in rotation.
pub fn enable(target: &Target, name: &str) -> Result<String, ClientError> {
    let answer = post(target, "/workers/enable", "enable", name)?;
    let state = field(&answer["state"]).unwrap_or_else(|| "?".into());
    let name = escape(name);
    Ok(if answer["changed"] == false {
        format!("{name} was not disabled (state {state})")
    } else {
        format!("{name} enabled (state {state})")
    })
}
