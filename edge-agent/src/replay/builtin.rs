//! The built-in scenarios, embedded in the binary; each shows one lesson.

/// (name, TOML text) of every built-in scenario, in the order `edge-agent replay` lists them.
pub const BUILTIN: [(&str, &str); 7] = [
    ("crash", include_str!("scenarios/crash.toml")),
    ("slow", include_str!("scenarios/slow.toml")),
    ("hot-key", include_str!("scenarios/hot-key.toml")),
    ("gray", include_str!("scenarios/gray.toml")),
    ("flap", include_str!("scenarios/flap.toml")),
    ("outage", include_str!("scenarios/outage.toml")),
    ("replicas", include_str!("scenarios/replicas.toml")),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::scenario::Scenario;

    #[test]
    fn every_builtin_parses_and_is_named_after_its_file() {
        for (name, text) in BUILTIN {
            let s = Scenario::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.name, name);
            assert!(!s.lesson.is_empty(), "{name} says its lesson");
            // The lessons that need HTTP (retries of 503s, header keys, two agents) stay off L4.
            let l4 = ["crash", "slow", "flap", "outage"].contains(&name);
            assert_eq!(s.l4, l4, "{name}: l4");
        }
    }
}
