//! A member's pull uses the member's registry credentials, read with its
//! rights, never root's: its own file is read; a file of root's (there,
//! or linked from its home) is not.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use banger_host::caller::Caller;
use banger_host::image::maker::user_credentials;

fn auth_file(path: &Path, user_pass: &str) {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(user_pass);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        format!(r#"{{"auths":{{"registry.example:5000":{{"auth":"{encoded}"}}}}}}"#),
    )
    .unwrap();
}

#[test]
fn a_member_reads_only_its_own_credentials() {
    if !nix::unistd::geteuid().is_root() {
        let why = "reading as another user needs root";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("not run: {why}");
        return;
    }
    let (uid, gid) = (64_322u32, 64_322u32);
    let member = Caller { uid, gid };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    let own = home.join(".docker/config.json");
    auth_file(&own, "member:its-token");
    for path in [&home, &home.join(".docker"), &own] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o600)).unwrap();
    let found = user_credentials(member, Some(&home), "registry.example:5000")
        .unwrap()
        .expect("the member's own credentials");
    assert_eq!(
        (found.username.as_str(), found.password.as_str()),
        ("member", "its-token")
    );

    // Root's credentials linked from the member's home are not read.
    let roots = dir.path().join("root-auth.json");
    auth_file(&roots, "root:root-token");
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&own).unwrap();
    std::os::unix::fs::symlink(&roots, &own).unwrap();
    let found = user_credentials(member, Some(&home), "registry.example:5000");
    assert!(
        !matches!(&found, Ok(Some(c)) if c.username == "root"),
        "root's credentials were read for a member: {found:?}"
    );
    // No home: no credentials.
    assert!(user_credentials(member, None, "registry.example:5000")
        .unwrap()
        .is_none());
}
