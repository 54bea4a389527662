//! `corral check` as a new user meets it (issue 19): the mistakes of the
//! first hour each get one error that says what to write, every TOML form
//! is accepted, errors come in line order, and what is allowed but wrong
//! gets a warning. And a reload says what it applied and what a flag holds.

mod common;

use std::time::Duration;

use common::*;

/// Runs `corral check FILE [-- extra]` on `text`; (exit code, output).
fn check(text: &str, extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.toml");
    std::fs::write(&path, text).unwrap();
    let mut args = vec!["check", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    corral_cmd(&args)
}

fn errors(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.contains(": error: ")).collect()
}

/// The 1-based line an error line points at (`FILE:LINE:COL: error: ...`).
fn line_of(error: &str) -> usize {
    let place = error.split(": error: ").next().unwrap();
    let mut parts = place.rsplit(':');
    let _column = parts.next();
    parts.next().and_then(|l| l.parse().ok()).unwrap_or(0)
}

#[test]
fn one_bracket_backends_is_one_error_that_says_two() {
    let (code, out) = check(
        "[log]\nlevel = \"info\"\n\n[backends]\nname = \"app\"\naddress = \"127.0.0.1:3000\"\n",
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    let errors = errors(&out);
    assert_eq!(errors.len(), 1, "one mistake, one error: {out}");
    assert!(errors[0].contains("corral.toml:4:"), "{out}");
    assert!(errors[0].contains("[[backends]]"), "{out}");
    assert!(
        !out.contains("format, level"),
        "[log]'s keys have nothing to do with it: {out}"
    );
}

#[test]
fn a_misspelt_section_gets_a_did_you_mean() {
    let (code, out) = check("[worker]\ncommand = [\"sh\"]\n", &[]);
    assert_eq!(code, Some(2), "{out}");
    let errors = errors(&out);
    assert_eq!(errors.len(), 1, "{out}");
    assert!(errors[0].contains("corral.toml:1:"), "{out}");
    assert!(errors[0].contains("did you mean `[workers]`"), "{out}");
    assert!(
        !out.contains("token_file"),
        "[admin]'s keys have nothing to do with it: {out}"
    );
}

#[test]
fn an_unknown_key_is_told_with_its_own_sections_keys() {
    let (code, out) = check(
        "[workers]\ncommand = [\"sh\"]\n[admin]\ncount = 3\n[health]\nintervall = \"2s\"\n",
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    let errors = errors(&out);
    assert_eq!(errors.len(), 2, "{out}");
    assert!(errors[0].contains("corral.toml:4:1"), "{out}");
    assert!(errors[0].contains("`admin.count`"), "{out}");
    assert!(errors[0].contains("bind, token_file"), "{out}");
    assert!(
        errors[0].contains("[workers]"),
        "misplaced: its section named: {out}"
    );
    assert!(errors[1].contains("`health.intervall`"), "{out}");
    assert!(errors[1].contains("did you mean `interval`"), "{out}");
}

#[test]
fn dotted_keys_inline_tables_and_quoted_keys_are_accepted() {
    let (code, out) = check(
        "workers.command = [\"sh\", \"-c\", \"sleep 1\"]\nworkers.count = 2\nhealth = { interval = \"3s\" }\n[timeouts]\n\"idle\" = \"2h\"\n[[backends]]\nname = \"app\"\naddress = \"127.0.0.1:3000\"\n",
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("corral.toml: ok"), "{out}");
    // A mistake in a dotted key is named with its full key.
    let (code, out) = check(
        "workers.command = [\"sh\"]\nworkers.count = \"many\"\n",
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("corral.toml:2:"), "{out}");
    assert!(out.contains("key `workers.count`"), "{out}");
    // And a dotted key under another section's header is that section's.
    let (code, out) = check("[log]\nlevel = \"info\"\nworkers.command = [\"sh\"]\n", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("corral.toml:3:1"), "{out}");
    assert!(out.contains("unknown key `workers` in [log]"), "{out}");
}

#[test]
fn errors_come_in_the_order_of_the_lines() {
    let (code, out) = check(
        "[timeouts]\nidle = \"x\"\n[health]\nrise = \"a\"\nbogus = 3\n[workers]\ncommand = [\"sh\"]\ncount = 0\n[listener]\nbacklog = 0\n",
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    let lines: Vec<usize> = errors(&out).iter().map(|e| line_of(e)).collect();
    assert_eq!(lines, [2, 4, 5, 8, 10], "{out}");
}

#[test]
fn an_env_key_corral_sets_is_a_warning_saying_so() {
    let (code, out) = check(
        "[workers]\ncommand = [\"sh\"]\nenv = { PORT = \"3000\", GREETING = \"hi\" }\n",
        &[],
    );
    assert_eq!(code, Some(0), "a warning, not an error: {out}");
    let warning = out
        .lines()
        .find(|l| l.contains("warning") && l.contains("workers.env"))
        .unwrap_or_else(|| panic!("no workers.env warning: {out}"));
    assert!(warning.contains("corral sets PORT"), "{warning}");
    assert!(!out.contains("GREETING"), "{out}");
}

#[test]
fn a_commandless_workers_section_is_checked_with_the_program_after_dashes() {
    let text = "[workers]\ncount = 2\n";
    let (code, out) = check(text, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("workers.command"), "{out}");
    assert!(out.contains("command = ["), "says what to write: {out}");
    assert!(out.contains("-- PROGRAM ARGS"), "says `--`: {out}");
    let (code, out) = check(text, &["--", "sh", "-c", "sleep 1"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("corral.toml: ok"), "{out}");
    // The program after `--` is checked like the file's.
    let (code, out) = check(text, &["--", "no-such-program-anywhere"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no-such-program-anywhere"), "{out}");
}

#[test]
fn an_open_admin_port_without_a_token_is_a_warning_with_the_fix() {
    let admin = format!("0.0.0.0:{}", free_port());
    let (code, out) = check(
        &format!("[admin]\nbind = \"{admin}\"\n[workers]\ncommand = [\"sh\"]\n"),
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    let warning = out
        .lines()
        .find(|l| l.contains("warning") && l.contains("admin.bind"))
        .unwrap_or_else(|| panic!("no admin.bind warning: {out}"));
    assert!(warning.contains("token_file = "), "{warning}");
    let (_, out) = check(
        &format!(
            "[admin]\nbind = \"127.0.0.1:{}\"\n[workers]\ncommand = [\"sh\"]\n",
            free_port()
        ),
        &[],
    );
    assert!(!out.contains("warning"), "loopback needs no token: {out}");
}

#[test]
fn a_reload_under_a_flag_names_what_the_flag_holds() {
    let config = Config::new().demo_workers(2);
    let corral = Corral::start_with(&config, &["-i", "1"], &[]);
    corral.wait_up(1);
    let admin = corral.admin.to_string();

    let (code, out) = corral_cmd(&["reload", "--admin", &admin]);
    assert_eq!(code, Some(0), "{out}");
    let held = "workers.count is 2 in the file but -i 1 holds; pass no -i to follow the file";
    assert!(out.contains(held), "{out}");
    assert!(out.contains("no key changed"), "{out}");
    corral.wait_log(held, Duration::from_secs(5));

    // A change of each class is named as what became of it.
    corral.rewrite(
        &config
            .clone()
            .set("health.interval", "3s")
            .set("listener.backlog", 64),
    );
    let (code, body) = http(corral.admin, "POST", "/reload");
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["report"]["applied"],
        serde_json::json!(["health.interval"])
    );
    assert_eq!(
        answer["report"]["needs_restart"],
        serde_json::json!(["listener.backlog"])
    );
    assert!(body.contains(held), "{body}");
    assert_eq!(
        corral.backends_in("up"),
        1,
        "-i still holds: {}",
        corral.status()
    );

    // A refused reload keeps its 400 and its reason.
    corral.rewrite(
        &config
            .clone()
            .set("admin.bind", format!("127.0.0.1:{}", free_port()).as_str()),
    );
    let (code, body) = http(corral.admin, "POST", "/reload");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("admin.bind changed"), "{body}");
}
