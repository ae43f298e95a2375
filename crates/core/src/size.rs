//! Human byte sizes ("8G", "512MiB", "1.5g") as users type them: the
//! API's own (`banger_proto::units`).

pub use banger_proto::units::{format_size, parse_size, SizeError};
