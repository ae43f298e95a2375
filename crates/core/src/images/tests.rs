//! Flow tests of `Images` over the in-memory store and a fake maker that
//! can be held at its slow step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use banger_proto::image::{Artifact, ArtifactRole, Origin, MANIFEST_FORMAT};
use tokio::sync::Semaphore;

use super::*;
use crate::catalog::BuildRecipe;
use crate::clock::SystemClock;
use crate::image_maker::RegisterFiles;
use crate::memory_store::MemoryStore;
use crate::progress::NoProgress;

/// A maker that writes two small artifacts. Requests whose bundle URL or
/// suite starts with `held` wait for a permit from `gate` first; `fail`
/// fails after writing.
#[derive(Default)]
struct FakeMaker {
    gate: Option<Arc<Semaphore>>,
    calls: AtomicUsize,
    entered: tokio::sync::Notify,
    staged: StdMutex<Vec<PathBuf>>,
}

fn key(request: &ImageRequest) -> String {
    match request {
        ImageRequest::Build(r) => r.suite.clone(),
        ImageRequest::Bundle(b) => b.url.clone(),
        ImageRequest::Register(f) => f.rootfs.display().to_string(),
        ImageRequest::Oci(o) => o.reference.clone(),
        ImageRequest::Promote(p) => p.vm.clone(),
    }
}

#[async_trait]
impl ImageMaker for FakeMaker {
    fn check(&self, request: &ImageRequest) -> Result<(), MakeError> {
        if key(request).starts_with("bad") {
            return Err(MakeError::invalid(
                "not ext4: bad",
                Some("give an ext4 image"),
            ));
        }
        Ok(())
    }

    async fn make(
        &self,
        name: &str,
        request: &ImageRequest,
        staging: &Path,
        _progress: &dyn Progress,
    ) -> Result<Manifest, MakeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.staged.lock().unwrap().push(staging.to_path_buf());
        std::fs::write(staging.join("kernel"), b"kernel").unwrap();
        std::fs::write(staging.join("rootfs.ext4"), b"rootfs").unwrap();
        self.entered.notify_waiters();
        let key = key(request);
        if key.starts_with("held") {
            let gate = self.gate.as_ref().unwrap();
            gate.acquire().await.unwrap().forget();
        }
        if key.starts_with("fail") {
            return Err(MakeError::failed("mmdebstrap failed: no network", None));
        }
        let artifact = |role: ArtifactRole| Artifact {
            role,
            file: role.file_name().into(),
            bytes: 6,
            sha256: "0".repeat(64),
        };
        Ok(Manifest {
            format: MANIFEST_FORMAT,
            name: if name.is_empty() {
                "from-bundle".into()
            } else {
                name.into()
            },
            kernel_version: None,
            oci: None,
            sshd: None,
            lineage: Vec::new(),
            origin: Origin {
                method: request.source().into(),
                from: key,
                packages: vec![],
                banger_version: "test".into(),
                made_at: "1970-01-01T00:00:00Z".into(),
            },
            artifacts: vec![
                artifact(ArtifactRole::Kernel),
                artifact(ArtifactRole::Rootfs),
            ],
        })
    }

    async fn export(
        &self,
        _: &Path,
        mut out: std::fs::File,
        _: &Path,
        _: &dyn Progress,
    ) -> Result<(), MakeError> {
        std::io::Write::write_all(&mut out, b"bundle").unwrap();
        Ok(())
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: Arc<dyn Store>,
    maker: Arc<FakeMaker>,
    images: Arc<Images>,
}

fn fixture(maker: FakeMaker, catalog: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let maker = Arc::new(maker);
    let images = Arc::new(Images::new(
        store.clone(),
        maker.clone(),
        ImageDirs::new(root.clone()),
        Catalog::parse(catalog, "test").unwrap(),
        Arc::new(SystemClock),
    ));
    Fixture {
        _tmp: tmp,
        root,
        store,
        maker,
        images,
    }
}

fn staging_entries(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join(".staging"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn recipe(suite: &str) -> BuildRecipe {
    BuildRecipe {
        suite: suite.into(),
        packages: vec![],
    }
}

#[tokio::test]
async fn build_publishes_into_the_image_dir_and_records_it() {
    let f = fixture(FakeMaker::default(), "");
    let image = f
        .images
        .build("dev", recipe("bookworm"), &NoProgress)
        .await
        .unwrap();
    assert_eq!(image.source, "build");
    assert_eq!(image.kernel_path, f.root.join(&image.id).join("kernel"));
    assert_eq!(std::fs::read(&image.rootfs_path).unwrap(), b"rootfs");
    assert_eq!(
        image.work_seed_path, None,
        "no seed in the manifest, none recorded"
    );
    assert_eq!(f.images.find("dev").unwrap(), image);
    assert!(staging_entries(&f.root).is_empty());
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let f = fixture(FakeMaker::default(), "");
    let err = f
        .images
        .build("Bad Name", recipe("bookworm"), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Name(_)), "{err}");
    let files = RegisterFiles {
        kernel: crate::image_maker::KernelChoice::File("/k".into()),
        initrd: None,
        rootfs: "bad-rootfs".into(),
        work_seed: None,
        no_work_seed: false,
        shown: Vec::new(),
    };
    let err = f
        .images
        .register("reg", files, &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "not ext4: bad");
    f.images
        .build("dev", recipe("bookworm"), &NoProgress)
        .await
        .unwrap();
    let err = f
        .images
        .build("dev", recipe("bookworm"), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NameTaken(_)), "{err}");
    assert_eq!(
        f.maker.calls.load(Ordering::SeqCst),
        1,
        "refused before any slow work"
    );
    assert_eq!(f.images.list().unwrap().len(), 1);
    assert!(staging_entries(&f.root).is_empty());
}

#[tokio::test]
async fn a_failed_make_leaves_no_staging_and_no_record() {
    let f = fixture(FakeMaker::default(), "");
    let err = f
        .images
        .build("dev", recipe("fail"), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mmdebstrap failed"));
    assert!(f.images.list().unwrap().is_empty());
    let staged = f.maker.staged.lock().unwrap().clone();
    assert_eq!(staged.len(), 1);
    assert!(!staged[0].exists(), "staging removed");
}

#[tokio::test]
async fn a_cancelled_make_leaves_no_staging() {
    let gate = Arc::new(Semaphore::new(0));
    let f = fixture(
        FakeMaker {
            gate: Some(gate),
            ..Default::default()
        },
        "",
    );
    let images = f.images.clone();
    let task = tokio::spawn(async move { images.build("dev", recipe("held"), &NoProgress).await });
    while f.maker.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(staging_entries(&f.root).len(), 1);
    task.abort();
    let _ = task.await;
    assert!(staging_entries(&f.root).is_empty());
    assert!(f.images.list().unwrap().is_empty());
}

#[tokio::test]
async fn pulls_of_different_names_overlap() {
    let gate = Arc::new(Semaphore::new(0));
    let f = fixture(
        FakeMaker {
            gate: Some(gate.clone()),
            ..Default::default()
        },
        "",
    );
    let images = f.images.clone();
    let slow = tokio::spawn(async move {
        let source = PullSource::parse(
            "http://127.0.0.1/held-a.tar.zst",
            None,
            &Catalog::embedded(),
        );
        images.pull(held(source), Some("slow"), &NoProgress).await
    });
    while f.maker.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The first pull sits in its slow body; a second one completes.
    let fast = tokio::time::timeout(
        Duration::from_secs(10),
        f.images.pull(
            PullSource::parse("http://127.0.0.1/b.tar.zst", None, &Catalog::embedded()),
            Some("fast"),
            &NoProgress,
        ),
    )
    .await
    .expect("the second pull does not wait for the first")
    .unwrap();
    assert_eq!(fast.name, "fast");
    assert!(!slow.is_finished());
    gate.add_permits(1);
    assert_eq!(slow.await.unwrap().unwrap().name, "slow");
}

/// Routes a URL pull through the held path of the fake.
fn held(source: PullSource) -> PullSource {
    match source {
        PullSource::Url { url, sha256 } => PullSource::Url {
            url: url.replace("http://127.0.0.1/", "held-"),
            sha256,
        },
        other => other,
    }
}

#[tokio::test]
async fn two_publishers_of_one_name_one_wins_and_the_loser_cleans_up() {
    let gate = Arc::new(Semaphore::new(0));
    let f = fixture(
        FakeMaker {
            gate: Some(gate.clone()),
            ..Default::default()
        },
        "",
    );
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let images = f.images.clone();
        tasks.push(tokio::spawn(async move {
            images.build("same", recipe("held"), &NoProgress).await
        }));
    }
    // Both pass the early name check and reach the slow body.
    while f.maker.calls.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(staging_entries(&f.root).len(), 2);
    gate.add_permits(2);
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let wins = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(wins, 1, "exactly one winner");
    let loss = outcomes.into_iter().find_map(|o| o.err()).unwrap();
    assert!(
        matches!(loss, ImageError::NameTaken(ref n) if n == "same"),
        "{loss}"
    );
    assert!(
        staging_entries(&f.root).is_empty(),
        "loser's staging removed"
    );
    let published: Vec<_> = std::fs::read_dir(&f.root)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(published.len(), 1, "one image directory");
    assert_eq!(f.images.list().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_first_uses_of_a_catalog_image_pull_it_once() {
    let gate = Arc::new(Semaphore::new(0));
    let f = fixture(
        FakeMaker {
            gate: Some(gate.clone()),
            ..Default::default()
        },
        "[[image]]\nname = \"deb\"\nbuild = { suite = \"held-bookworm\" }\n",
    );
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let images = f.images.clone();
        tasks.push(tokio::spawn(async move {
            images.resolve_or_fetch("deb", &NoProgress).await
        }));
    }
    while f.maker.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.add_permits(1);
    let mut ids = HashMap::new();
    for task in tasks {
        let image = task.await.unwrap().unwrap();
        *ids.entry(image.id).or_insert(0) += 1;
    }
    assert_eq!(ids.len(), 1, "all got the same image");
    assert_eq!(f.maker.calls.load(Ordering::SeqCst), 1, "pulled once");
    let err = f
        .images
        .resolve_or_fetch("nope", &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotInCatalog(_)));
}

#[tokio::test]
async fn a_bundle_without_a_name_takes_the_manifest_name() {
    let f = fixture(FakeMaker::default(), "");
    let image = f
        .images
        .pull(
            PullSource::parse("/tmp/x.tar.zst", None, &Catalog::embedded()),
            None,
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(image.name, "from-bundle");
    assert_eq!(image.source, "pull");
}

#[tokio::test]
async fn delete_refuses_an_image_in_use_and_names_the_vms() {
    let f = fixture(FakeMaker::default(), "");
    let image = f
        .images
        .build("dev", recipe("bookworm"), &NoProgress)
        .await
        .unwrap();
    let vm = vm_using("web", &image.id);
    f.store.insert_vm(&vm).unwrap();
    let err = f.images.delete("dev").await.unwrap_err();
    assert_eq!(err.to_string(), "image dev is in use by vm web");
    assert!(image.rootfs_path.exists());
    f.store.delete_vm(&vm.id).unwrap();
    f.images.delete("dev").await.unwrap();
    assert!(!image.rootfs_path.exists());
    assert!(!f.root.join(&image.id).exists());
    assert!(matches!(
        f.images.delete("dev").await,
        Err(ImageError::NotFound(_))
    ));
}

#[tokio::test]
async fn export_writes_into_the_given_file_and_knows_only_recorded_images() {
    let f = fixture(FakeMaker::default(), "");
    f.images
        .build("dev", recipe("bookworm"), &NoProgress)
        .await
        .unwrap();
    let out = f.root.join("out.tar.zst");
    let file = || std::fs::File::create(&out).unwrap();
    f.images
        .export("dev", file(), &out, &NoProgress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"bundle");
    let err = f
        .images
        .export("nope", file(), &out, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound(_)), "{err}");
}

#[test]
fn pull_sources_tell_urls_and_paths_from_catalog_names() {
    assert_eq!(
        PullSource::parse("debian-bookworm", None, &Catalog::embedded()),
        PullSource::Catalog("debian-bookworm".into())
    );
    for what in ["https://h/x.tar.zst", "/srv/x", "file:///x"] {
        assert!(
            matches!(
                PullSource::parse(what, None, &Catalog::embedded()),
                PullSource::Url { .. }
            ),
            "{what}"
        );
    }
    for what in [
        "alpine",
        "debian:bookworm",
        "ghcr.io/org/app:v1",
        "docker://debian-bookworm",
        "127.0.0.1:5000/repo@sha256:00",
    ] {
        assert_eq!(
            PullSource::parse(what, None, &Catalog::embedded()),
            PullSource::Oci {
                reference: what.into(),
                kernel_from: None,
                auth: Default::default(),
            },
            "{what}"
        );
    }
}

fn vm_using(name: &str, image_id: &str) -> crate::vm::Vm {
    crate::vm::Vm::sample(name, image_id)
}
