//! The checks the fuzz targets in `fuzz/` run on untrusted bytes, one
//! function per parser that reads them: agent reply lines (from a guest),
//! DNS queries (from guests), image bundles (from whoever made the file),
//! OCI layers and manifests (from registries), `vm cp` archives (from a
//! guest, or from a client), ext4 images (from whoever made them). Each must return without
//! panicking, hold no more than its bound, and write nothing outside the
//! place it was given. `tests/regressions.rs` replays every input the
//! fuzzers once crashed on (`fuzz/regressions/TARGET/`) through the same
//! functions.

use std::io::Cursor;
use std::path::Path;

use banger_core::progress::NoProgress;
use banger_host::agent::client::next_line;
use tokio::io::BufReader;

/// One target's check.
pub type Check = fn(&[u8]);

/// Every fuzz target, by the name of its directory of regressions.
pub const TARGETS: &[(&str, Check)] = &[
    ("agent_reply", agent_reply),
    ("dns_query", dns_query),
    ("bundle", bundle),
    ("oci_layer", oci_layer),
    ("oci_manifest", oci_manifest),
    ("copy_archive", copy_archive),
    ("ext4_image", ext4_image),
];

/// The line bound the fuzzers use (small, so long lines are reached).
const LINE_MAX: usize = 512;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Agent replies: split into bounded lines, each parsed as a reply.
pub fn agent_reply(data: &[u8]) {
    runtime().block_on(async {
        let mut reader = BufReader::new(Cursor::new(data));
        let mut line = Vec::new();
        while let Ok(Some(whole)) = next_line(&mut reader, &mut line, LINE_MAX).await {
            assert!(line.len() <= LINE_MAX, "a line past its bound was held");
            if whole {
                let _ = serde_json::from_slice::<banger_proto::agent::Reply>(&line);
            }
        }
    });
}

/// DNS: a query answered by the server (no upstreams, one record).
pub fn dns_query(data: &[u8]) {
    runtime().block_on(async {
        let bridge = "172.29.0.1/24".parse().expect("a network");
        let server = banger_host::net::dns::DnsServer::new(Vec::new(), bridge);
        server.set("web", std::net::Ipv4Addr::new(172, 29, 0, 2));
        // A guest without NAT: the least trusted client that is answered.
        let guest = std::net::IpAddr::V4(std::net::Ipv4Addr::new(172, 29, 0, 9));
        if let Some(answer) = server.answer(guest, data).await {
            assert!(answer.len() <= 4096, "an answer past a datagram");
        }
    });
}

/// A bundle file unpacked into staging: an error is fine, a panic or a
/// file outside staging is not.
pub fn bundle(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("in.tar.zst");
    std::fs::write(&file, data).expect("the input written");
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).expect("staging");
    let unpacked = runtime().block_on(banger_host::image::bundle::unpack(
        &file,
        &staging,
        &NoProgress,
    ));
    assert_only(dir.path(), &["in.tar.zst", "staging"]);
    if unpacked.is_err() {
        let left: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
        assert!(left.is_empty(), "a failed unpack left {left:?}");
    }
}

/// An uncompressed layer applied to an empty tree: nothing outside it.
pub fn oci_layer(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).expect("the tree");
    let _ = banger_oci::layer::apply_tar(Cursor::new(data), &tree, "fuzz");
    assert_only(dir.path(), &["tree"]);
}

/// A `vm cp` archive unpacked into a directory (as a copy out lands in
/// the caller's): nothing outside it.
pub fn copy_archive(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let into = dir.path().join("into");
    std::fs::create_dir(&into).expect("the destination");
    let options = banger_copy::UnpackOptions {
        owner: banger_copy::Owner::Unpacker,
        top: None,
    };
    let _ = banger_copy::unpack(Cursor::new(data), &into, options);
    assert_only(dir.path(), &["into"]);
    // As a copy out unpacks: only the name asked for lands.
    let asked = dir.path().join("asked");
    std::fs::create_dir(&asked).expect("the destination");
    let options = banger_copy::UnpackOptions {
        owner: banger_copy::Owner::Unpacker,
        top: Some("report".into()),
    };
    let _ = banger_copy::unpack(Cursor::new(data), &asked, options);
    assert_only(dir.path(), &["into", "asked"]);
    for entry in std::fs::read_dir(&asked).expect("the destination") {
        let name = entry.expect("an entry").file_name();
        assert_eq!(name, "report", "a name not asked for landed");
    }
}

/// An ext4 image (registered, pulled or bundled) read inside itself: its
/// trees copied out both ways links go, nothing written outside the
/// place given, never more bytes than the image holds.
pub fn ext4_image(data: &[u8]) {
    use banger_host::image::ext4::{Ext4Image, Links};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let image = dir.path().join("in.ext4");
    std::fs::write(&image, data).expect("the input written");
    let Ok(fs) = Ext4Image::open(&image) else {
        assert_only(dir.path(), &["in.ext4"]);
        return;
    };
    let _ = fs.exists("/bin/sh");
    let _ = fs.names(
        "/lib/modules",
        banger_host::image::ext4::FileType::Directory,
    );
    let kept = dir.path().join("kept");
    let _ = fs.copy_tree("/", &kept, Links::Keep);
    let resolved = dir.path().join("resolved");
    let _ = fs.copy_tree("/lib/modules", &resolved, Links::Resolve);
    let _ = fs.copy_file("/boot/vmlinuz", &dir.path().join("kernel"), 1 << 20);
    for out in [&kept, &resolved] {
        assert!(
            tree_bytes(out) <= data.len() as u64,
            "a copy wrote more than the image holds"
        );
    }
    let mut made = vec!["in.ext4"];
    for (name, path) in [("kept", &kept), ("resolved", &resolved)] {
        if path.exists() {
            made.push(name);
        }
    }
    if dir.path().join("kernel").exists() {
        made.push("kernel");
    }
    assert_only(dir.path(), &made);
}

/// Bytes of the regular files under `dir` (links not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Manifests, indexes and configs as a registry sends them.
pub fn oci_manifest(data: &[u8]) {
    if let Ok(index) = serde_json::from_slice::<oci_client::manifest::OciImageIndex>(data) {
        let _ = banger_oci::registry::pick_platform(&index);
    }
    let _ = serde_json::from_slice::<oci_client::manifest::OciImageManifest>(data);
    let _ = serde_json::from_slice::<banger_oci::registry::ImageConfigFile>(data);
}

/// `dir` holds exactly `names`.
fn assert_only(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .expect("the directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "something was written outside its place");
}
