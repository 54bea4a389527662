//! The dispatch strategies (`balance.strategy`, `--strategy`), defined
//! once. The config file (serde) and the command line (clap) read the same
//! spellings, derived from the variant names; what each strategy means in
//! each listen mode is decided by the exhaustive matches below and in
//! [`crate::dispatch::Dispatcher::pick`], so a new variant does not compile
//! until every one of them says what it does.
//!
//! Adding a strategy: add the variant (its kebab-case name is its
//! spelling), add it to [`StrategyKind::ALL`], then follow the compiler:
//! [`StrategyKind::as_str`], [`StrategyKind::handed_placement`] (None if the
//! kernel cannot do it in handed mode), and dispatch's `pick`.

use serde::Deserialize;

// The variants' doc comments are also `corral run --help`'s text for each
// value (clap reads them): plain words, no Markdown.
/// How a backend is chosen for a new client.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Each backend in turn.
    #[default]
    RoundRobin,
    /// The backend with the fewest open connections; ties in turn.
    LeastConnections,
    /// Each client (its address, masked by the sticky section's prefixes)
    /// stays on one backend.
    Sticky,
}

/// How the kernel places clients in `workers.listen = "fd"` mode (the
/// steering program's rule is built from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandedPlacement {
    /// Any slot in rotation.
    Spread,
    /// By the client's address, so one client stays on one slot.
    ByClient,
}

impl StrategyKind {
    /// Every strategy, in the order the docs list them.
    pub const ALL: [StrategyKind; 3] = [
        StrategyKind::RoundRobin,
        StrategyKind::LeastConnections,
        StrategyKind::Sticky,
    ];

    /// The spelling used in the config file, on the command line and in
    /// `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round-robin",
            StrategyKind::LeastConnections => "least-connections",
            StrategyKind::Sticky => "sticky",
        }
    }

    /// What the strategy is in handed mode, or `None` when it cannot work
    /// there (the config refuses it).
    pub fn handed_placement(self) -> Option<HandedPlacement> {
        match self {
            StrategyKind::RoundRobin => Some(HandedPlacement::Spread),
            // corral does not see the workers' connections in handed mode.
            StrategyKind::LeastConnections => None,
            StrategyKind::Sticky => Some(HandedPlacement::ByClient),
        }
    }

    /// The strategies that work in handed mode, spelled for an error
    /// message: `"round-robin" or "sticky"`.
    pub fn handed_choices() -> String {
        let names: Vec<String> = StrategyKind::ALL
            .iter()
            .filter(|s| s.handed_placement().is_some())
            .map(|s| format!("\"{}\"", s.as_str()))
            .collect();
        match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn one_spelling_for_the_file_the_command_line_and_status() {
        for strategy in StrategyKind::ALL {
            let name = strategy.as_str();
            let from_file: StrategyKind =
                serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                    serde::de::value::Error,
                >::new(name))
                .unwrap();
            assert_eq!(from_file, strategy);
            assert_eq!(StrategyKind::from_str(name, false), Ok(strategy));
        }
        assert_eq!(StrategyKind::value_variants(), StrategyKind::ALL);
    }

    #[test]
    fn fd_mode_choices_are_named_from_the_enum() {
        assert_eq!(
            StrategyKind::handed_choices(),
            "\"round-robin\" or \"sticky\""
        );
    }
}
