//! `banger image ...`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use banger_proto::image::{
    CatalogList, Image, ImageBuildRequest, ImageExportRequest, ImageList, ImagePullRequest,
    ImageRegisterRequest, PruneReport,
};
use banger_proto::progress::ProgressEvent;
use banger_proto::rules::HostPath;
use banger_proto::vm::VmPromoteRequest;
use clap::Subcommand;
use serde::Serialize;

use crate::client::{checked, Client};
use crate::output::{self, col, say, wide, Format, OutputArgs};
use crate::progress::Progress;
use crate::vm::path_segment;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images (or, with --catalog, the images banger can fetch).
    #[command(alias = "list")]
    Ls {
        /// List the catalog instead.
        #[arg(long)]
        catalog: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one image.
    Show {
        /// Image name or id.
        image: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Build an image from Debian packages on this host (mmdebstrap).
    Build {
        /// Name of the new image.
        name: String,
        /// Debian suite.
        #[arg(long, value_name = "SUITE", default_value = "bookworm")]
        debian: String,
        /// An extra Debian package (repeat for more).
        #[arg(long = "package", value_name = "P")]
        packages: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Pull an OCI image from a registry, a catalog image, or a bundle.
    ///
    /// SOURCE is read in this order: `docker://REF` is an OCI image; an
    /// http(s):// or file:// URL, a path starting with / ./ or ../, or a
    /// name ending in .tar.zst is a bundle; a catalog name is that entry;
    /// anything else is an OCI reference by Docker's rules (`alpine` is
    /// docker.io/library/alpine:latest).
    Pull {
        /// An OCI reference, a catalog name, a bundle URL or path.
        source: String,
        /// Name to record [default: the catalog name, the bundle's own, or
        /// the OCI repository's last part and tag, e.g. debian-bookworm].
        #[arg(long)]
        name: Option<String>,
        /// Expected sha256 of the bundle file.
        #[arg(long)]
        sha256: Option<String>,
        /// OCI images without a kernel boot with this image's kernel
        /// [default: the default image's].
        #[arg(long)]
        kernel_from: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Make a VM an image: its changes as a layer over its image (host
    /// keys, machine-id and hostname left out), its /root as the work
    /// seed. A running VM is synced and paused for the copy, then runs on.
    Promote {
        /// VM name or id.
        vm: String,
        /// Name of the new image.
        name: String,
        /// No work seed: VMs of the image start with an empty /root.
        #[arg(long)]
        no_work: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove cached OCI layers that no image uses.
    Prune,
    /// Make the image's warm template: creates of its default shape then
    /// restore a booted, ready VM instead of booting one.
    Warm {
        /// Image name or id.
        image: String,
    },
    /// Register a kernel and rootfs from this host as an image.
    Register {
        /// Name of the new image.
        name: String,
        /// A bzImage or ELF vmlinux, its modules in the rootfs [default: the
        /// rootfs's own /boot/vmlinuz-*, else the default image's kernel].
        #[arg(long, conflicts_with = "kernel_from")]
        kernel: Option<PathBuf>,
        /// Boot with the kernel (and its modules) of this image.
        #[arg(long)]
        kernel_from: Option<String>,
        /// An initramfs of your own (needs --kernel); without one banger
        /// makes the rootfs bootable.
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// An ext4 root filesystem image.
        #[arg(long)]
        rootfs: PathBuf,
        /// An ext4 image new VMs' /root starts from [default: made from the
        /// rootfs's /root].
        #[arg(long)]
        work_seed: Option<PathBuf>,
        /// Make no work seed: new VMs' /root starts empty.
        #[arg(long, conflicts_with = "work_seed")]
        no_work_seed: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write an image as a bundle (.tar.zst) that `image pull` takes.
    Export {
        /// Image name or id.
        image: String,
        /// The bundle file to write.
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove images no VM uses.
    #[command(alias = "remove")]
    Rm {
        /// Image names or ids.
        #[arg(required = true)]
        images: Vec<String>,
    },
}

pub async fn run(client: &Client, command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::Ls {
            catalog: true,
            output,
        } => {
            let list: CatalogList = client.get("/v1/catalog").await?;
            let rows: Vec<Vec<String>> = list
                .entries
                .iter()
                .map(|e| {
                    let local = if e.local { "yes" } else { "no" };
                    vec![
                        e.name.clone(),
                        e.kind.clone(),
                        e.from.clone(),
                        local.into(),
                        e.description.clone(),
                    ]
                })
                .collect();
            output::list(
                &output,
                &list,
                &[
                    col("NAME"),
                    col("KIND"),
                    col("FROM"),
                    col("LOCAL"),
                    col("DESCRIPTION"),
                ],
                &rows,
            )?;
        }
        ImageCommand::Ls {
            catalog: false,
            output,
        } => {
            let list: ImageList = client.get("/v1/images").await?;
            let rows: Vec<Vec<String>> = list
                .images
                .iter()
                .map(|i| {
                    let seed = if i.work_seed_path.is_some() {
                        "yes"
                    } else {
                        "no"
                    };
                    vec![
                        i.name.clone(),
                        i.source.clone(),
                        i.size_bytes.map(output::size).unwrap_or_else(|| "-".into()),
                        seed.into(),
                        i.created_at.clone(),
                        i.id.clone(),
                        i.kernel_version.clone().unwrap_or_else(|| "-".into()),
                        i.lineage.first().cloned().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            output::list(
                &output,
                &list,
                &[
                    col("NAME"),
                    col("SOURCE"),
                    col("SIZE"),
                    col("WORK SEED"),
                    col("CREATED"),
                    col("ID"),
                    wide("KERNEL"),
                    wide("PARENT"),
                ],
                &rows,
            )?;
        }
        ImageCommand::Show { image, output } => {
            let image: Image = client
                .get(&format!("/v1/images/{}", path_segment(&image)))
                .await?;
            if output.format() == Format::Json {
                return output::json(&image);
            }
            print_image(&image);
        }
        ImageCommand::Build {
            name,
            debian,
            packages,
            json,
        } => {
            let request = ImageBuildRequest {
                name: checked(name)?,
                suite: Some(checked(debian)?),
                packages: packages
                    .into_iter()
                    .map(checked)
                    .collect::<anyhow::Result<_>>()?,
            };
            long_op(client, "/v1/images/build", &request, json, "built").await?;
        }
        ImageCommand::Pull {
            source,
            name,
            sha256,
            kernel_from,
            json,
        } => {
            let source = if looks_like_path(&source) {
                absolute(Path::new(&source))?.display().to_string()
            } else {
                source
            };
            let request = ImagePullRequest {
                source: checked(source)?,
                name: name.map(checked).transpose()?,
                sha256: sha256.map(checked).transpose()?,
                kernel_from,
            };
            long_op(client, "/v1/images/pull", &request, json, "pulled").await?;
        }
        ImageCommand::Register {
            name,
            kernel,
            kernel_from,
            initrd,
            rootfs,
            work_seed,
            no_work_seed,
            json,
        } => {
            let text =
                |p: &Path| -> Result<HostPath> { checked(absolute(p)?.display().to_string()) };
            let request = ImageRegisterRequest {
                name: checked(name)?,
                kernel: kernel.as_deref().map(text).transpose()?,
                kernel_from,
                initrd: initrd.as_deref().map(text).transpose()?,
                rootfs: text(&rootfs)?,
                work_seed: work_seed.as_deref().map(text).transpose()?,
                no_work_seed,
            };
            long_op(client, "/v1/images/register", &request, json, "registered").await?;
        }
        ImageCommand::Export { image, file, json } => {
            let request = ImageExportRequest {
                file: checked(absolute(&file)?.display().to_string())?,
            };
            let path = format!("/v1/images/{}/export", path_segment(&image));
            long_op(client, &path, &request, json, "exported").await?;
            if !json {
                say!("wrote {}", request.file);
            }
        }
        ImageCommand::Warm { image } => crate::snapshot::warm(client, &image).await?,
        ImageCommand::Promote {
            vm,
            name,
            no_work,
            json,
        } => {
            let request = VmPromoteRequest {
                name: checked(name)?,
                no_work,
            };
            let path = format!("/v1/vms/{}/promote", path_segment(&vm));
            long_op(client, &path, &request, json, "promoted").await?;
        }
        ImageCommand::Prune => {
            let report: PruneReport = client.post("/v1/images/prune", &()).await?;
            say!(
                "removed {} cached layers ({})",
                report.blobs,
                output::size(report.bytes)
            );
        }
        ImageCommand::Rm { images } => {
            for image in images {
                let removed: Image = client
                    .delete(&format!("/v1/images/{}", path_segment(&image)))
                    .await?;
                say!("removed {}", removed.name);
            }
        }
    }
    Ok(())
}

/// Runs a long operation with live progress and prints the image.
async fn long_op<B: Serialize>(
    client: &Client,
    path: &str,
    body: &B,
    json: bool,
    verb: &str,
) -> Result<()> {
    let mut progress = Progress::new(json || output::quiet());
    let outcome = client
        .post_stream(path, body, |event| progress.event(event))
        .await;
    match outcome {
        Ok(ProgressEvent::Image { image, elapsed_ms }) => {
            progress.finish(elapsed_ms);
            if json {
                return output::json(&image);
            }
            output::made(&image.name, || {
                format!("{verb} {} ({})", image.name, image.id)
            });
            Ok(())
        }
        Ok(_) => unreachable!("post_stream returns only the final event"),
        Err(err) => {
            progress.abandon();
            Err(err)
        }
    }
}

fn print_image(image: &Image) {
    let none = || "-".to_string();
    let manifest = image.manifest.as_ref();
    for (key, value) in [
        ("name", image.name.clone()),
        ("id", image.id.clone()),
        ("source", image.source.clone()),
        (
            "made from",
            manifest.map(|m| m.origin.from.clone()).unwrap_or_else(none),
        ),
        (
            "packages",
            manifest
                .filter(|m| !m.origin.packages.is_empty())
                .map(|m| m.origin.packages.join(", "))
                .unwrap_or_else(none),
        ),
        (
            "kernel version",
            image.kernel_version.clone().unwrap_or_else(none),
        ),
        (
            "size",
            image.size_bytes.map(output::size).unwrap_or_else(none),
        ),
        ("kernel", image.kernel_path.clone()),
        ("vmlinux", image.vmlinux_path.clone().unwrap_or_else(none)),
        ("initrd", image.initrd_path.clone().unwrap_or_else(none)),
        ("rootfs", image.rootfs_path.clone()),
        (
            "work seed",
            image.work_seed_path.clone().unwrap_or_else(none),
        ),
        ("created", image.created_at.clone()),
        (
            "lineage",
            if image.lineage.is_empty() {
                none()
            } else {
                image.lineage.join(" <- ")
            },
        ),
    ] {
        println!("{:<15} {value}", format!("{key}:"));
    }
    for (i, layer) in image.layer_paths.iter().enumerate() {
        println!("{:<15} {layer}", format!("layer {i}:"));
    }
    if let Some(oci) = manifest.and_then(|m| m.oci.as_ref()) {
        let words = |v: &[String]| {
            if v.is_empty() {
                none()
            } else {
                serde_json::to_string(v).unwrap_or_default()
            }
        };
        println!("oci:");
        for (key, value) in [
            ("reference", oci.reference.clone()),
            ("digest", oci.digest.clone()),
            ("layers", oci.layers.len().to_string()),
            ("entrypoint", words(&oci.config.entrypoint)),
            ("cmd", words(&oci.config.cmd)),
            (
                "workdir",
                oci.config.working_dir.clone().unwrap_or_else(none),
            ),
            ("user", oci.config.user.clone().unwrap_or_else(none)),
        ] {
            println!("  {:<13} {value}", format!("{key}:"));
        }
        for env in &oci.config.env {
            println!("  env:          {env}");
        }
    }
    if let Some(manifest) = manifest {
        println!("artifacts:");
        for a in &manifest.artifacts {
            println!(
                "  {:<15} {:>7}  sha256:{}",
                a.file,
                output::size(a.bytes),
                a.sha256
            );
        }
    }
}

/// The daemon's rule for bundle paths (`PullSource::parse`).
fn looks_like_path(source: &str) -> bool {
    ["/", "./", "../"].iter().any(|p| source.starts_with(p))
        || (!source.contains("://") && source.ends_with(".tar.zst"))
}

/// Paths go to the daemon, which may run elsewhere in the tree: make them
/// absolute here.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("bad path {}", path.display()))
}
