//! Byte sizes formatted for people, shared by the daemon's messages and the CLI.

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
    fn formats() {
        assert_eq!(super::format_size(8 << 30), "8G");
        assert_eq!(super::format_size(3 << 29), "1.5G");
        assert_eq!(super::format_size(100), "100B");
    }
}
