//! `HostImageMaker`: the `ImageMaker` of a real host. Build runs the
//! Debian pipeline (`build`), pull downloads and unpacks a bundle
//! (`download`, `bundle`), register checks and copies the given files and
//! makes what is missing (vmlinux, work seed); an OCI pull fetches the
//! layers (`banger_oci`), makes an ext4 rootfs of them and goes the
//! register way from there; every path ends with a manifest of sizes and
//! digests (`digest`).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use banger_core::catalog::{BuildRecipe, BundleSource};
use banger_core::image_maker::{
    ImageKernel, ImageMaker, ImageRequest, KernelChoice, MakeError, OciSource, RegisterFiles,
    RegistryAuth,
};
use banger_core::progress::Progress;
use banger_oci::{ImageRef, OciError};
use banger_proto::image::{
    ArtifactRole, ContainerConfig, Manifest, OciImage, Origin, PruneReport, MANIFEST_FORMAT,
};
use tokio::process::Command;

use super::userland::{self, probe::RootfsFacts};
use super::{build, bundle, digest, download, ext4, guest_binary, kernel};
use crate::tools::find_tool;

pub struct HostImageMaker {
    guest_binary: PathBuf,
    mirror: Option<String>,
    oci: Option<OciPulls>,
}

/// What OCI pulls need: the layer cache and how to reach registries.
#[derive(Debug, Clone)]
pub struct OciPulls {
    pub cache: std::sync::Arc<banger_oci::cache::BlobCache>,
    pub options: banger_oci::PullOptions,
}

impl HostImageMaker {
    pub fn new(guest_binary: PathBuf, mirror: Option<String>) -> Self {
        HostImageMaker {
            guest_binary,
            mirror,
            oci: None,
        }
    }

    /// Enables OCI pulls.
    pub fn with_oci(mut self, oci: OciPulls) -> Self {
        self.oci = Some(oci);
        self
    }
}

/// An OCI error as the image flows see it: what the user asked for is
/// wrong (no such image, no amd64 build, a bad reference) or the work
/// failed (the registry, the bytes, the host).
fn oci_failed(err: OciError) -> MakeError {
    let hint = err.hint();
    match err {
        OciError::BadReference { .. }
        | OciError::NotFound { .. }
        | OciError::NoPlatform { .. }
        | OciError::Unsupported { .. } => MakeError::invalid(err.to_string(), hint),
        OciError::Unreachable { .. }
        | OciError::Denied { .. }
        | OciError::Status { .. }
        | OciError::Truncated { .. }
        | OciError::Interrupted { .. } => MakeError::upstream(err.to_string(), hint),
        _ => MakeError::failed(err.to_string(), hint),
    }
}

/// Mount points banger-init and the small init need, made in a pulled
/// tree when its image has none (container images often lack them).
const MOUNT_POINTS: [(&str, u32); 6] = [
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
];

fn add_mount_points(tree: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (dir, mode) in MOUNT_POINTS {
        let path = tree.join(dir);
        if std::fs::symlink_metadata(&path).is_err() {
            std::fs::create_dir(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

fn check_oci(maker: &HostImageMaker, source: &OciSource) -> Result<(), MakeError> {
    ImageRef::parse(&source.reference).map_err(oci_failed)?;
    if maker.oci.is_none() {
        return Err(MakeError::unavailable(
            "oci pulls are not set up in this daemon",
            None,
        ));
    }
    require_tools(
        &[("mkfs.ext4", "e2fsprogs"), ("debugfs", "e2fsprogs")],
        "pulled",
    )?;
    guest_binary_present(maker)
}

/// Each `(tool, Debian package)` must be on this host for images to be
/// `made` (built, pulled).
fn require_tools(tools: &[(&str, &str)], made: &str) -> Result<(), MakeError> {
    for (tool, package) in tools {
        if find_tool(tool).is_none() {
            return Err(MakeError::unavailable(
                format!("{tool} not found: images cannot be {made} on this host"),
                Some(&format!("install it: apt-get install {package}")),
            ));
        }
    }
    Ok(())
}

fn guest_binary_present(maker: &HostImageMaker) -> Result<(), MakeError> {
    guest_binary::check(&maker.guest_binary).map_err(|err| {
        MakeError::unavailable(
            format!("{err}: images cannot be made"),
            Some(guest_binary::HINT),
        )
    })
}

/// A download error: the server's fault (unreachable, an error status, a
/// cut body) is upstream's, a bad URL the request's.
fn download_failed(err: download::DownloadError) -> MakeError {
    use download::DownloadError as E;
    match err {
        E::BadUrl { .. } | E::BadSha256(_) => MakeError::invalid(err.to_string(), None),
        E::Connect { .. }
        | E::Status { .. }
        | E::Truncated { .. }
        | E::Stalled { .. }
        | E::Interrupted { .. } => MakeError::upstream(
            err.to_string(),
            Some("check the url and that this host reaches it"),
        ),
        other => failed(other),
    }
}

fn failed(err: impl std::fmt::Display) -> MakeError {
    MakeError::failed(err.to_string(), None)
}

/// A userland that cannot be made bootable: what its image holds is the
/// caller's to fix.
fn from_userland(err: userland::UserlandError) -> MakeError {
    match err {
        userland::UserlandError::Ext4(err) => from_image(err),
        userland::UserlandError::Release(_)
        | userland::UserlandError::Modules(super::modules::ModulesError::Unsafe { .. }) => {
            MakeError::invalid(
                err.to_string(),
                Some(
                    "the image's kernel modules are not an ordinary modules tree: run depmod in it",
                ),
            )
        }
        err => failed(err),
    }
}

/// The registry credentials of `caller` (whose home is `home`) for
/// `registry`, read with its rights: a file it cannot read is not read.
pub fn user_credentials(
    caller: crate::caller::Caller,
    home: Option<&Path>,
    registry: &str,
) -> Result<Option<banger_oci::auth::Credentials>, banger_oci::OciError> {
    let Some(home) = home else {
        return Ok(None);
    };
    let files = banger_oci::auth::user_files(home, caller.uid);
    let found = caller.with_rights(|| Ok(banger_oci::auth::find(registry, &files)));
    match found {
        Ok(found) => found,
        // No identity to read with: no credentials rather than root's.
        Err(_) => Ok(None),
    }
}

/// A kernel taken out of a rootfs's `/boot` is at most this large.
const MAX_KERNEL_BYTES: u64 = 512 << 20;

/// An error reading inside an image: what the image holds is the
/// caller's to fix (422), the rest is the work's failure.
fn from_image(err: ext4::Ext4Error) -> MakeError {
    match &err {
        ext4::Ext4Error::Inside(
            ext4::InsideError::Refused(_) | ext4::InsideError::Open { .. } | ext4::InsideError::Read { .. },
        ) => MakeError::invalid(
            err.to_string(),
            Some("the image's filesystem is damaged or not an ordinary one: check it with e2fsck -fn"),
        ),
        _ => failed(err),
    }
}

/// Debian package names: `[a-z0-9][a-z0-9+.-]+`.
fn valid_package(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && name.len() >= 2
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'+' | b'.' | b'-'))
}

fn check_build(maker: &HostImageMaker, recipe: &BuildRecipe) -> Result<(), MakeError> {
    if recipe.suite.is_empty() || !recipe.suite.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(MakeError::invalid(
            format!("bad debian suite {:?}", recipe.suite),
            Some("give a suite name like bookworm"),
        ));
    }
    if let Some(bad) = recipe.packages.iter().find(|p| !valid_package(p)) {
        return Err(MakeError::invalid(
            format!("bad debian package name {bad:?}"),
            Some("package names are lowercase letters, digits and + . -"),
        ));
    }
    require_tools(
        &[
            ("mmdebstrap", "mmdebstrap"),
            ("mkfs.ext4", "e2fsprogs"),
            ("debugfs", "e2fsprogs"),
        ],
        "built",
    )?;
    guest_binary_present(maker)
}

fn check_bundle(source: &BundleSource) -> Result<(), MakeError> {
    let url = &source.url;
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(());
    }
    let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
    if url.contains("://") && !url.starts_with("file://") {
        return Err(MakeError::invalid(
            format!("cannot pull from {url}: only http, https and file urls are supported"),
            Some("give an http(s):// url or a path to a .tar.zst bundle"),
        ));
    }
    if !path.is_file() {
        return Err(MakeError::invalid(
            format!("no bundle file at {}", path.display()),
            Some("check the path; bundles are written by `banger image export`"),
        ));
    }
    Ok(())
}

fn existing_file(path: &Path, name: &str, what: &str) -> Result<(), MakeError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(MakeError::invalid(
            format!("{what} {name}: no such file"),
            Some("give the path of an existing file on the daemon's host"),
        ))
    }
}

/// Whether the file starts as an initramfs does: a cpio archive, plain or
/// compressed. (Any other file would be copied into the image, and an
/// export would hand it out.)
fn looks_like_initramfs(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 6];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if read.is_err() {
        return false;
    }
    const MAGICS: [&[u8]; 9] = [
        b"070701",
        b"070702",
        b"070707",
        b"\x1f\x8b",
        b"\x28\xb5\x2f\xfd",
        b"\xfd7zXZ",
        b"\x02\x21\x4c\x18",
        b"BZh",
        b"\x5d\x00\x00",
    ];
    MAGICS.iter().any(|magic| head.starts_with(magic))
}

fn check_ext4(path: &Path, name: &str, what: &str) -> Result<(), MakeError> {
    existing_file(path, name, what)?;
    match ext4::is_ext4(path) {
        Ok(true) => Ok(()),
        Ok(false) => Err(MakeError::invalid(
            format!("{what} {name} is not an ext4 image"),
            Some("make one from a directory with mkfs.ext4 -d DIR FILE SIZE"),
        )),
        Err(err) => Err(MakeError::invalid(
            format!("cannot read {what} {name}: {err}"),
            None,
        )),
    }
}

fn check_register(maker: &HostImageMaker, files: &RegisterFiles) -> Result<(), MakeError> {
    if let KernelChoice::File(kernel) = &files.kernel {
        existing_file(kernel, &files.show(kernel), "kernel")?;
        kernel::detect(kernel).map_err(|err| {
            MakeError::invalid(
                format!("kernel {}: {err}", files.show(kernel)),
                Some("give a bzImage (vmlinuz) or an uncompressed ELF vmlinux"),
            )
        })?;
    }
    if let Some(initrd) = &files.initrd {
        existing_file(initrd, &files.show(initrd), "initrd")?;
        if !looks_like_initramfs(initrd) {
            return Err(MakeError::invalid(
                format!("initrd {} is not an initramfs", files.show(initrd)),
                Some(
                    "give a cpio archive (plain, or gzip, zstd, xz, lz4, bzip2 or lzma compressed)",
                ),
            ));
        }
    }
    check_ext4(&files.rootfs, &files.show(&files.rootfs), "rootfs")?;
    if let Some(seed) = &files.work_seed {
        check_ext4(seed, &files.show(seed), "work seed")?;
    }
    if files.initrd.is_none() {
        boot_kernel(files, &format!("rootfs {}", files.show(&files.rootfs)))?;
        // It gets banger's initramfs and the agent.
        guest_binary_present(maker)?;
    }
    Ok(())
}

/// Where a registered rootfs's kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KernelFile {
    /// A file on the host.
    Host(PathBuf),
    /// A file inside the rootfs (`/boot/vmlinuz-RELEASE`).
    InRootfs(String),
}

/// What a registered rootfs without an initrd boots with: the kernel, its
/// release, and the ext4 image that holds its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootKernel {
    init: userland::probe::InitKind,
    sshd: bool,
    file: KernelFile,
    release: String,
    modules_from: PathBuf,
    /// Said in the image's origin.
    from: String,
}

/// The kernel a registered rootfs without an initrd boots with, or the
/// refusal (with a hint) of a rootfs that would not boot.
/// `what` names the userland in refusals (`rootfs PATH`, `image REF`).
fn boot_kernel(files: &RegisterFiles, what: &str) -> Result<BootKernel, MakeError> {
    let facts = RootfsFacts::probe_ext4(&files.rootfs).map_err(failed)?;
    let refuse = |refusal: userland::probe::Unbootable| {
        MakeError::invalid(format!("{what}: {}", refusal.message), Some(&refusal.hint))
    };
    let init = facts.userland().map_err(refuse)?;
    let sshd = facts.has_sshd;
    let of_image = |image: &ImageKernel| -> Result<BootKernel, MakeError> {
        let release = image
            .release
            .clone()
            .or_else(|| kernel::version(&image.kernel).ok().flatten())
            .ok_or_else(|| {
                MakeError::invalid(
                    format!(
                        "the kernel of image {} does not say its release",
                        image.image
                    ),
                    Some("give --kernel FILE with its modules in the rootfs instead"),
                )
            })?;
        Ok(BootKernel {
            init,
            sshd,
            file: KernelFile::Host(image.kernel.clone()),
            release,
            modules_from: image.rootfs.clone(),
            from: format!("the kernel of image {}", image.image),
        })
    };
    match &files.kernel {
        KernelChoice::File(path) => {
            let release = kernel::version(path).ok().flatten();
            Ok(BootKernel {
                init,
                sshd,
                file: KernelFile::Host(path.clone()),
                release: facts.modules_for(release.as_deref()).map_err(refuse)?,
                modules_from: files.rootfs.clone(),
                from: files.show(path),
            })
        }
        KernelChoice::Rootfs { fallback } => match (facts.own_kernel(), fallback) {
            (Some(release), _) => Ok(BootKernel {
                init,
                sshd,
                file: KernelFile::InRootfs(format!("/boot/vmlinuz-{release}")),
                from: format!("its own kernel {release}"),
                release,
                modules_from: files.rootfs.clone(),
            }),
            (None, Some(image)) => of_image(image),
            (None, None) => Err(MakeError::invalid(
                format!(
                    "{what}: no kernel in its /boot with its modules, and no default image on this host to take one from"
                ),
                Some("give --kernel-from IMAGE (or --kernel FILE to register), or pull the default image first"),
            )),
        },
        KernelChoice::Image(image) => of_image(image),
    }
}

/// Copies a file keeping holes (rootfs and seed images are sparse).
async fn sparse_copy(from: &Path, to: &Path) -> Result<(), MakeError> {
    let out = Command::new("cp")
        .arg("--sparse=always")
        .arg("--")
        .arg(from)
        .arg(to)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| failed(format!("cannot run cp: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "cannot copy {}: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Describes every artifact present in `dir` and writes the manifest.
async fn finish_manifest(
    dir: &Path,
    name: &str,
    kernel_version: Option<String>,
    origin: Origin,
    (oci, sshd): (Option<OciImage>, Option<bool>),
    progress: &dyn Progress,
) -> Result<Manifest, MakeError> {
    progress.stage("digest");
    let dir = dir.to_path_buf();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let mut artifacts = Vec::new();
        for role in ArtifactRole::ALL {
            if dir.join(role.file_name()).exists() {
                artifacts.push(digest::describe(&dir, role).map_err(failed)?);
            }
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            name,
            kernel_version,
            origin,
            oci,
            sshd,
            artifacts,
            lineage: Vec::new(),
        };
        digest::write_manifest(&dir, &manifest).map_err(failed)?;
        Ok(manifest)
    })
    .await
    .map_err(failed)?
}

impl HostImageMaker {
    async fn make_build(
        &self,
        name: &str,
        recipe: &BuildRecipe,
        staging: &Path,
        progress: &dyn Progress,
    ) -> Result<Manifest, MakeError> {
        let host_recipe = build::BuildRecipe {
            suite: recipe.suite.clone(),
            packages: recipe.packages.clone(),
            mirror: self.mirror.clone(),
        };
        let output = build::build(&host_recipe, &self.guest_binary, staging, progress)
            .await
            .map_err(failed)?;
        let origin = Origin {
            method: "build".into(),
            from: format!("debian {}", recipe.suite),
            packages: recipe.packages.clone(),
            banger_version: env!("CARGO_PKG_VERSION").into(),
            made_at: now_rfc3339(),
        };
        finish_manifest(
            staging,
            name,
            Some(output.kernel_version),
            origin,
            (None, Some(true)),
            progress,
        )
        .await
    }

    async fn make_pull(
        &self,
        source: &BundleSource,
        staging: &Path,
        progress: &dyn Progress,
    ) -> Result<Manifest, MakeError> {
        let url = &source.url;
        let local = if url.starts_with("http://") || url.starts_with("https://") {
            None
        } else {
            Some(PathBuf::from(url.strip_prefix("file://").unwrap_or(url)))
        };
        let bundle_file = match &local {
            Some(path) => {
                if let Some(expected) = &source.sha256 {
                    progress.stage("verify");
                    let path = path.clone();
                    let got = tokio::task::spawn_blocking(move || digest::sha256_file(&path))
                        .await
                        .map_err(failed)?
                        .map_err(failed)?;
                    if &got != expected {
                        return Err(MakeError::failed(
                            format!("sha256 mismatch for {url}: expected {expected}, got {got}"),
                            Some("the bundle is not the one expected: check its source"),
                        ));
                    }
                }
                path.clone()
            }
            None => {
                progress.stage("download");
                let dest = staging.join(".bundle.tar.zst");
                download::fetch(url, &dest, source.sha256.as_deref(), progress)
                    .await
                    .map_err(download_failed)?;
                dest
            }
        };
        progress.stage("unpack");
        let manifest = bundle::unpack(&bundle_file, staging, progress)
            .await
            .map_err(failed)?;
        if local.is_none() {
            let _ = std::fs::remove_file(&bundle_file);
        }
        Ok(manifest)
    }

    async fn make_oci(
        &self,
        name: &str,
        source: &OciSource,
        staging: &Path,
        progress: &dyn Progress,
    ) -> Result<Manifest, MakeError> {
        let oci = self
            .oci
            .as_ref()
            .ok_or_else(|| MakeError::failed("oci pulls are not set up in this daemon", None))?;
        let reference = ImageRef::parse(&source.reference).map_err(oci_failed)?;
        let tree = staging.join(".tree");
        std::fs::create_dir(&tree).map_err(failed)?;
        // The guest's `/` (mkfs.ext4 -d takes the tree's own mode), whatever
        // umask the daemon runs with.
        std::fs::set_permissions(&tree, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(failed)?;
        let mut options = oci.options.clone();
        if let RegistryAuth::User { uid, gid } = source.auth {
            // A member's pull: its own credentials or none, never root's.
            let home = nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map(|user| user.dir);
            options.credentials = user_credentials(
                crate::caller::Caller { uid, gid },
                home.as_deref(),
                reference.registry(),
            )
            .map_err(oci_failed)?;
            options.auth_files = Vec::new();
        }
        let pulled = banger_oci::pull(&reference, &oci.cache, &tree, &options, progress)
            .await
            .map_err(oci_failed)?;
        if pulled.downloaded > 0 {
            progress.note(&format!("downloaded {} bytes", pulled.downloaded));
        }
        add_mount_points(&tree).map_err(failed)?;
        progress.stage("rootfs");
        let rootfs = staging.join(ArtifactRole::Rootfs.file_name());
        ext4::make_from_dir(&tree, &rootfs, None, "banger-root")
            .await
            .map_err(failed)?;
        std::fs::remove_dir_all(&tree).map_err(failed)?;
        let files = RegisterFiles {
            kernel: source.kernel.clone(),
            initrd: None,
            rootfs,
            work_seed: None,
            no_work_seed: false,
            shown: Vec::new(),
        };
        let config = pulled.config.clone();
        let pulled_as = Pulled {
            origin_from: format!("{}@{}", pulled.reference, pulled.digest),
            oci: OciImage {
                reference: pulled.reference.clone(),
                digest: pulled.digest.clone(),
                layers: pulled.layers.iter().map(|l| l.digest.clone()).collect(),
                config: ContainerConfig {
                    env: config.env.unwrap_or_default(),
                    entrypoint: config.entrypoint.unwrap_or_default(),
                    cmd: config.cmd.unwrap_or_default(),
                    working_dir: config.working_dir.filter(|d| !d.is_empty()),
                    user: config.user.filter(|u| !u.is_empty()),
                },
            },
        };
        let manifest = self
            .make_userland(name, &files, staging, progress, Some(pulled_as))
            .await?;
        drop(pulled.pins);
        Ok(manifest)
    }

    async fn make_register(
        &self,
        name: &str,
        files: &RegisterFiles,
        staging: &Path,
        progress: &dyn Progress,
    ) -> Result<Manifest, MakeError> {
        self.make_userland(name, files, staging, progress, None)
            .await
    }

    /// Register's way from root filesystem to image; `pulled` says the
    /// rootfs (already in staging) came from an OCI image.
    async fn make_userland(
        &self,
        name: &str,
        files: &RegisterFiles,
        staging: &Path,
        progress: &dyn Progress,
        pulled: Option<Pulled>,
    ) -> Result<Manifest, MakeError> {
        progress.stage("copy");
        let target = |role: ArtifactRole| staging.join(role.file_name());
        let boot = match files.initrd {
            Some(_) => None,
            None => Some(boot_kernel(
                files,
                &match &pulled {
                    Some(pulled) => format!("image {}", pulled.oci.reference),
                    None => format!("rootfs {}", files.show(&files.rootfs)),
                },
            )?),
        };
        match (&files.kernel, &boot) {
            (_, Some(boot)) => match &boot.file {
                KernelFile::Host(path) => sparse_copy(path, &target(ArtifactRole::Kernel)).await?,
                KernelFile::InRootfs(inside) => {
                    ext4::copy_file_out(
                        &files.rootfs,
                        inside,
                        &target(ArtifactRole::Kernel),
                        MAX_KERNEL_BYTES,
                    )
                    .await
                    .map_err(from_image)?;
                }
            },
            (KernelChoice::File(path), None) => {
                sparse_copy(path, &target(ArtifactRole::Kernel)).await?
            }
            (_, None) => {
                return Err(MakeError::invalid(
                    "an initrd of your own needs its kernel",
                    Some("give --kernel with --initrd"),
                ))
            }
        }
        if let Some(initrd) = &files.initrd {
            sparse_copy(initrd, &target(ArtifactRole::Initrd)).await?;
        }
        if files.rootfs != target(ArtifactRole::Rootfs) {
            sparse_copy(&files.rootfs, &target(ArtifactRole::Rootfs)).await?;
        }
        if let Some(seed) = &files.work_seed {
            sparse_copy(seed, &target(ArtifactRole::WorkSeed)).await?;
        }
        let kernel_path = target(ArtifactRole::Kernel);
        let mut kernel_version = None;
        match kernel::detect(&kernel_path).map_err(failed)? {
            kernel::KernelFormat::Elf => {
                std::fs::hard_link(&kernel_path, target(ArtifactRole::Vmlinux)).map_err(failed)?;
            }
            kernel::KernelFormat::BzImage => {
                kernel_version = kernel::version(&kernel_path).ok().flatten();
                progress.stage("vmlinux");
                let (from, to) = (kernel_path.clone(), target(ArtifactRole::Vmlinux));
                let extracted =
                    tokio::task::spawn_blocking(move || kernel::extract_vmlinux(&from, &to))
                        .await
                        .map_err(failed)?;
                if let Err(err) = extracted {
                    // QEMU boots the bzImage; only Firecracker needs vmlinux.
                    progress.note(&format!("no vmlinux: {err}"));
                    tracing::warn!(error = %err, "registered kernel has no extractable vmlinux");
                }
            }
        }
        if let Some(boot) = &boot {
            // banger's initramfs for the kernel, from its modules, and the
            // agent with the lean units in the image's own copy.
            progress.stage("bootable");
            let scratch = staging.join(".userland");
            userland::make_bootable(
                &target(ArtifactRole::Rootfs),
                &userland::BootWith {
                    modules_from: &boot.modules_from,
                    release: &boot.release,
                    init: boot.init,
                    sshd: boot.sshd,
                },
                &self.guest_binary,
                &target(ArtifactRole::Initrd),
                &scratch,
            )
            .await
            .map_err(from_userland)?;
            let _ = std::fs::remove_dir_all(&scratch);
            kernel_version = Some(boot.release.clone());
        }
        if files.work_seed.is_none() && !files.no_work_seed {
            progress.stage("work_seed");
            let tree = staging.join(".root-tree");
            std::fs::create_dir_all(&tree).map_err(failed)?;
            let root = tree.join("root");
            ext4::copy_tree_out(
                &target(ArtifactRole::Rootfs),
                "/root",
                &root,
                ext4::Links::Keep,
            )
            .await
            .map_err(from_image)?;
            ext4::make_work_seed(&root, &target(ArtifactRole::WorkSeed))
                .await
                .map_err(failed)?;
            let _ = std::fs::remove_dir_all(&tree);
        }
        let shown = |p: &Path| files.show(p);
        let rootfs_from = match &pulled {
            Some(pulled) => pulled.origin_from.clone(),
            None => shown(&files.rootfs),
        };
        let origin = Origin {
            method: if pulled.is_some() { "pull" } else { "register" }.into(),
            from: match (&boot, &files.kernel) {
                (Some(boot), _) => format!("{rootfs_from} + {}", boot.from),
                (None, KernelChoice::File(kernel)) => {
                    format!("{} + {}", shown(kernel), shown(&files.rootfs))
                }
                (None, _) => shown(&files.rootfs),
            },
            packages: Vec::new(),
            banger_version: env!("CARGO_PKG_VERSION").into(),
            made_at: now_rfc3339(),
        };
        let oci = pulled.map(|p| p.oci);
        let sshd = boot.as_ref().map(|b| b.sshd);
        finish_manifest(staging, name, kernel_version, origin, (oci, sshd), progress).await
    }
}

/// Where a pulled rootfs came from.
struct Pulled {
    /// Said in the image's origin: `REFERENCE@DIGEST`.
    origin_from: String,
    oci: OciImage,
}

#[async_trait]
impl ImageMaker for HostImageMaker {
    fn check(&self, request: &ImageRequest) -> Result<(), MakeError> {
        match request {
            ImageRequest::Build(recipe) => check_build(self, recipe),
            ImageRequest::Bundle(source) => check_bundle(source),
            ImageRequest::Register(files) => check_register(self, files),
            ImageRequest::Oci(source) => check_oci(self, source),
            ImageRequest::Promote(_) => {
                for tool in super::promote::TOOLS {
                    if crate::tools::find_tool(tool).is_none() {
                        return Err(MakeError::unavailable(
                            format!("{tool} not found: vms cannot be promoted on this host"),
                            Some("install it: apt-get install e2fsprogs"),
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    fn prune(&self, referenced: &[String]) -> Result<PruneReport, MakeError> {
        let Some(oci) = &self.oci else {
            return Ok(PruneReport::default());
        };
        let keep = referenced.iter().cloned().collect();
        let pruned = oci.cache.prune(&keep).map_err(oci_failed)?;
        Ok(PruneReport {
            blobs: pruned.blobs,
            bytes: pruned.bytes,
        })
    }

    async fn make(
        &self,
        name: &str,
        request: &ImageRequest,
        staging: &Path,
        progress: &dyn Progress,
    ) -> Result<Manifest, MakeError> {
        match request {
            ImageRequest::Build(recipe) => self.make_build(name, recipe, staging, progress).await,
            ImageRequest::Bundle(source) => self.make_pull(source, staging, progress).await,
            ImageRequest::Register(files) => {
                self.make_register(name, files, staging, progress).await
            }
            ImageRequest::Oci(source) => self.make_oci(name, source, staging, progress).await,
            ImageRequest::Promote(files) => {
                super::promote::make(name, files, staging, progress).await
            }
        }
    }

    async fn export(
        &self,
        image_dir: &Path,
        out: std::fs::File,
        shown: &Path,
        progress: &dyn Progress,
    ) -> Result<(), MakeError> {
        progress.stage("export");
        bundle::export(image_dir, out, shown, progress)
            .await
            .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initrd_must_look_like_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        assert!(looks_like_initramfs(&file("cpio", b"070701000000")));
        assert!(looks_like_initramfs(&file(
            "gz",
            b"\x1f\x8b\x08\x00\x00\x00"
        )));
        assert!(looks_like_initramfs(&file(
            "zst",
            b"\x28\xb5\x2f\xfd\x00\x00"
        )));
        assert!(!looks_like_initramfs(&file(
            "shadow",
            b"root:$y$j9T$...:19000:0:99999:7:::\n"
        )));
        assert!(!looks_like_initramfs(&file("short", b"07")));
        assert!(!looks_like_initramfs(&dir.path().join("missing")));
    }

    #[test]
    fn package_names_are_checked() {
        for ok in ["curl", "g++", "libc6-dev", "python3.11"] {
            assert!(valid_package(ok), "{ok}");
        }
        for bad in ["", "x", "Curl", "-rf", "a b", "pkg;rm", "../x"] {
            assert!(!valid_package(bad), "{bad}");
        }
    }

    #[test]
    fn bundle_sources_are_checked_before_work() {
        let missing = BundleSource {
            url: "/nonexistent/x.tar.zst".into(),
            sha256: None,
        };
        assert!(check_bundle(&missing)
            .unwrap_err()
            .to_string()
            .contains("no bundle file"));
        let ftp = BundleSource {
            url: "ftp://h/x".into(),
            sha256: None,
        };
        assert!(check_bundle(&ftp)
            .unwrap_err()
            .to_string()
            .contains("only http"));
        let http = BundleSource {
            url: "https://h/x.tar.zst".into(),
            sha256: None,
        };
        assert!(check_bundle(&http).is_ok());
    }
}
