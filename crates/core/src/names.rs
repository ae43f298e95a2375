//! VM and image names: what a valid name is, and generated two-word names.

use rand::seq::IndexedRandom;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid name {0:?}: names are 1-63 characters of a-z, 0-9 and '-', starting with a letter"
)]
pub struct NameError(pub String);

/// Checks `[a-z][a-z0-9-]{0,62}`; the name becomes a DNS label (`NAME.vm`).
/// The rule is the API's (`banger_proto::rules::Name`).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    banger_proto::rules::Name::check(name).map_err(|_| NameError(name.to_string()))
}

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brave", "brisk", "calm", "clever", "cosmic", "crisp", "dapper", "eager",
    "fancy", "fast", "fierce", "gentle", "glad", "golden", "grand", "happy", "hardy", "humble",
    "icy", "jolly", "keen", "kind", "lively", "lucky", "merry", "mighty", "misty", "noble",
    "plucky", "proud", "quick", "quiet", "rapid", "rosy", "rusty", "shiny", "silent", "silver",
    "sleek", "snug", "spry", "steady", "sunny", "swift", "tidy", "vivid", "warm", "witty",
];

const NOUNS: &[&str] = &[
    "badger", "bear", "beaver", "bison", "cedar", "comet", "crane", "dingo", "eagle", "falcon",
    "ferret", "finch", "fjord", "gecko", "heron", "ibex", "island", "jackal", "koala", "lark",
    "lemur", "lynx", "maple", "marten", "meadow", "moose", "newt", "otter", "owl", "panda",
    "pebble", "pine", "puffin", "quail", "raven", "reef", "river", "robin", "salmon", "seal",
    "sparrow", "spruce", "stork", "tapir", "tiger", "trout", "tundra", "walrus", "willow", "yak",
];

/// A random `adjective-noun` name.
pub fn random_name() -> String {
    let mut rng = rand::rng();
    let adjective = ADJECTIVES.choose(&mut rng).copied().unwrap_or("quick");
    let noun = NOUNS.choose(&mut rng).copied().unwrap_or("otter");
    format!("{adjective}-{noun}")
}

/// A generated name that `taken` does not reject: random pairs first, then
/// a numbered suffix once the pairs run thin.
pub fn generate_name(mut taken: impl FnMut(&str) -> bool) -> String {
    for _ in 0..64 {
        let name = random_name();
        if !taken(&name) {
            return name;
        }
    }
    let base = random_name();
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken(name))
        .unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn validates() {
        for ok in ["a", "web-1", "x23", &"a".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "-a",
            "Abc",
            "a_b",
            "a.b",
            "a b",
            &"a".repeat(64),
            "é",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn word_lists_make_valid_names() {
        for word in ADJECTIVES.iter().chain(NOUNS) {
            assert!(validate_name(word).is_ok());
        }
    }

    #[test]
    fn generated_names_avoid_collisions() {
        let mut taken = HashSet::new();
        for _ in 0..3000 {
            let name = generate_name(|n| taken.contains(n));
            assert!(validate_name(&name).is_ok());
            assert!(taken.insert(name));
        }
    }
}
