//! Human byte sizes ("8G", "512MiB", "1.5g") as users type them.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size {0:?}: use a number with a unit, like 512M or 8G")]
pub struct SizeError(pub String);

/// Parses a size; single-letter units are binary (`8G` = 8 GiB). A bare
/// number is bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text.trim())
        .map_err(|_| SizeError(text.to_string()))
}

pub use banger_proto::units::format_size;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("10Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
    }
}
