//! Byte sizes as people write and read them (`8G`, `512MiB`, `1.5g`),
//! shared by the daemon's config and messages and the CLI, which turns
//! them into the byte counts the API takes.

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

/// Formats bytes for humans, in the largest binary unit that divides evenly
/// down to one decimal (`8G`, `1.5G`, `512M`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (unit, scale) in UNITS {
        if bytes >= scale {
            let whole = bytes / scale;
            let tenth = (bytes % scale) * 10 / scale;
            return if tenth == 0 {
                format!("{whole}{unit}")
            } else {
                format!("{whole}.{tenth}{unit}")
            };
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_units() {
        use super::parse_size;
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("10Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(super::format_size(8 << 30), "8G");
        assert_eq!(super::format_size(3 << 29), "1.5G");
        assert_eq!(super::format_size(100), "100B");
    }
}
