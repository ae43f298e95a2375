//! Promote over the lifecycle fakes and a fake maker: a running VM is
//! synced, paused, copied and resumed before the slow work, a stopped one
//! copied as it is; the image stands on its parent, which it keeps;
//! refusals leave nothing; of two promotes to one name one wins.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use banger_proto::image::{Artifact, ArtifactRole, Manifest, Origin, MANIFEST_FORMAT};

use super::lifecycle_tests::{booting, events, named, FakeCap, Log};
use super::*;
use crate::catalog::Catalog;
use crate::clock::SystemClock;
use crate::image_dirs::ImageDirs;
use crate::image_maker::{ImageMaker, ImageRequest, MakeError};
use crate::images::Images;
use crate::progress::{NoProgress, Progress};

fn artifact(role: ArtifactRole, file: &str) -> Artifact {
    Artifact {
        role,
        file: file.into(),
        bytes: 1,
        sha256: "0".repeat(64),
    }
}

fn manifest(name: &str, artifacts: Vec<Artifact>) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        name: name.into(),
        kernel_version: None,
        origin: Origin {
            method: "test".into(),
            from: "test".into(),
            packages: vec![],
            banger_version: "test".into(),
            made_at: "1970-01-01T00:00:00Z".into(),
        },
        artifacts,
        oci: None,
        sshd: None,
        lineage: vec![],
    }
}

/// FAKE: checks what the core staged, then writes a manifest of the
/// parent's artifacts and the new layer; may wait at `gate`.
#[derive(Default)]
struct PromoteMaker {
    gate: Option<Arc<tokio::sync::Semaphore>>,
    entered: tokio::sync::Notify,
    seen: std::sync::Mutex<Vec<(String, Vec<String>)>>,
}

#[async_trait]
impl ImageMaker for PromoteMaker {
    fn check(&self, _request: &ImageRequest) -> Result<(), MakeError> {
        Ok(())
    }

    async fn make(
        &self,
        name: &str,
        request: &ImageRequest,
        staging: &Path,
        _progress: &dyn Progress,
    ) -> Result<Manifest, MakeError> {
        let ImageRequest::Promote(files) = request else {
            panic!("not a promote");
        };
        let mut staged: Vec<String> = std::fs::read_dir(staging)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        staged.sort();
        self.seen
            .lock()
            .unwrap()
            .push((files.layer_file.clone(), staged));
        self.entered.notify_waiters();
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let mut artifacts = files.parent_manifest.artifacts.clone();
        artifacts.push(artifact(ArtifactRole::Layer, &files.layer_file));
        let mut made = manifest(name, artifacts);
        made.lineage = vec![files.parent_name.clone()];
        Ok(made)
    }

    async fn export(
        &self,
        _: &Path,
        _: std::fs::File,
        _: &Path,
        _: &dyn Progress,
    ) -> Result<(), MakeError> {
        unreachable!()
    }
}

struct Fixture {
    b: Banger,
    images: Arc<Images>,
    maker: Arc<PromoteMaker>,
    log: Log,
    images_dir: PathBuf,
}

fn fixture(maker: PromoteMaker) -> Fixture {
    let log = Log::default();
    let caps = vec![
        FakeCap::new(crate::capability::SYSTEM_DISK_FILE, &log),
        FakeCap::new(crate::capability::WORK_DISK_FILE, &log),
    ];
    let b = booting(caps, &log);
    let images_dir = b.settings().vms_dir.with_file_name("images");
    let parent_dir = images_dir.join("img-base");
    std::fs::create_dir_all(&parent_dir).unwrap();
    let mut base = b.store.find_image("base").unwrap().unwrap();
    base.rootfs_path = parent_dir.join("rootfs.ext4");
    base.manifest = Some(manifest(
        "base",
        vec![
            artifact(ArtifactRole::Kernel, "kernel"),
            artifact(ArtifactRole::Rootfs, "rootfs.ext4"),
        ],
    ));
    b.store.upsert_image(&base).unwrap();
    let maker = Arc::new(maker);
    let images = Arc::new(Images::new(
        b.store.clone(),
        maker.clone(),
        ImageDirs::new(images_dir.clone()),
        Catalog::embedded(),
        Arc::new(SystemClock),
    ));
    Fixture {
        b,
        images,
        maker,
        log,
        images_dir,
    }
}

/// A VM that has started once: its system disk is there.
async fn started(f: &Fixture, name: &str) -> Vm {
    let vm = f.b.create_vm(named(name)).await.unwrap();
    let image = f.b.image_of(&vm).unwrap();
    let dir = f.b.context(&vm, &image).vm_dir;
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(crate::capability::SYSTEM_DISK_FILE), b"disk").unwrap();
    vm
}

fn staging_left(f: &Fixture) -> usize {
    std::fs::read_dir(f.images_dir.join(".staging"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_running_vm_is_synced_paused_copied_and_resumed_then_made_an_image_on_its_parent() {
    let f = fixture(PromoteMaker::default());
    started(&f, "web").await;
    f.log.lock().unwrap().clear();
    let image =
        f.b.promote_vm(&f.images, "web", "dev", false, &NoProgress)
            .await
            .unwrap();
    assert_eq!(
        events(&f.log),
        [
            "agent.exec sync",
            "vmm.pause",
            "system.cow.save",
            "root.ext4.save",
            "vmm.resume"
        ]
    );
    // The maker found the system disk as the first layer, the work disk
    // as the work seed.
    let seen = f.maker.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [(
            "layer-0.ext4".to_string(),
            vec!["layer-0.ext4".to_string(), "work-seed.ext4".to_string()]
        )]
    );
    assert_eq!(image.parent_id.as_deref(), Some("img-base"));
    assert_eq!(
        image.layers,
        [f.images_dir.join(&image.id).join("layer-0.ext4")]
    );
    assert_eq!(
        f.b.store.find_image("dev").unwrap().unwrap().parent_id,
        image.parent_id
    );
    assert_eq!(staging_left(&f), 0);

    // The parent is kept while the child is there.
    let err = f.images.delete("base").await.unwrap_err();
    assert!(err.to_string().contains("image dev"), "{err}");
    f.images.delete("dev").await.unwrap();
    // (the VM still holds it; no child does any more)
    let err = f.images.delete("base").await.unwrap_err();
    assert!(!err.to_string().contains("image dev"), "{err}");
}

#[tokio::test]
async fn a_stopped_vm_is_copied_as_it_is_and_without_work_seed_when_asked() {
    let f = fixture(PromoteMaker::default());
    started(&f, "web").await;
    f.b.stop_vm("web", false).await.unwrap();
    f.log.lock().unwrap().clear();
    f.b.promote_vm(&f.images, "web", "dev", true, &NoProgress)
        .await
        .unwrap();
    assert_eq!(events(&f.log), ["system.cow.save", "root.ext4.save"]);
    let seen = f.maker.seen.lock().unwrap().clone();
    assert_eq!(seen[0].1, ["layer-0.ext4"], "no work seed");
}

#[tokio::test]
async fn refusals_leave_nothing() {
    let f = fixture(PromoteMaker::default());
    f.b.create_vm(CreateParams {
        no_start: true,
        ..named("unborn")
    })
    .await
    .unwrap();
    let err =
        f.b.promote_vm(&f.images, "unborn", "dev", false, &NoProgress)
            .await
            .unwrap_err();
    assert!(matches!(err, ServiceError::NeverStarted(_)), "{err}");
    assert_eq!(err.kind(), crate::service::ErrorKind::Conflict);
    started(&f, "web").await;
    for (vm, name) in [("web", "base"), ("web", "Bad Name"), ("nosuch", "dev")] {
        f.b.promote_vm(&f.images, vm, name, false, &NoProgress)
            .await
            .unwrap_err();
    }
    // An image already at the most layers takes no more.
    let mut base = f.b.store.find_image("base").unwrap().unwrap();
    base.layers = vec!["/l".into(); banger_proto::image::MAX_LAYERS];
    f.b.store.upsert_image(&base).unwrap();
    let err =
        f.b.promote_vm(&f.images, "web", "dev", false, &NoProgress)
            .await
            .unwrap_err();
    assert_eq!(
        err.kind(),
        crate::service::ErrorKind::Unprocessable,
        "{err}"
    );
    assert_eq!(f.images.list().unwrap().len(), 1);
    assert_eq!(staging_left(&f), 0);
    assert!(f.maker.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn of_two_promotes_to_one_name_one_wins_and_the_other_leaves_nothing() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let f = fixture(PromoteMaker {
        gate: Some(gate.clone()),
        ..PromoteMaker::default()
    });
    started(&f, "a").await;
    started(&f, "b").await;
    let f = Arc::new(f);
    let run = |vm: &'static str| {
        let f = f.clone();
        tokio::spawn(async move {
            f.b.promote_vm(&f.images, vm, "dev", false, &NoProgress)
                .await
        })
    };
    let (one, two) = (run("a"), run("b"));
    // Both are past their name check and in the slow work at once.
    while f.maker.seen.lock().unwrap().len() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    gate.add_permits(2);
    let results = [one.await.unwrap(), two.await.unwrap()];
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(lost.kind(), crate::service::ErrorKind::Conflict, "{lost}");
    assert_eq!(f.images.list().unwrap().len(), 2);
    assert_eq!(staging_left(&f), 0);
}
