//! `/v1/images` and `/v1/catalog`: list, show, build, pull, register,
//! export, remove, and promote a VM to one. The long ones answer with a
//! progress stream when asked (see `progress`); every request is checked
//! before any slow work starts, so bad input gets its own status even on
//! a stream.

use std::path::PathBuf;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use banger_core::catalog::{BuildRecipe, Recipe};
use banger_core::image_maker::{ImageRequest, KernelChoice, MakeError, RegisterFiles};
use banger_core::images::{ImageError, PullSource};
use banger_core::ServiceError;
use banger_proto::error::{ApiError, ErrorCode};
use banger_proto::image::{
    CatalogEntry, CatalogList, Image, ImageBuildRequest, ImageExportRequest, ImageList,
    ImagePullRequest, ImageRegisterRequest, PruneReport,
};
use banger_proto::progress::ProgressEvent;
use banger_proto::rules::HostPath;
use banger_proto::vm::VmPromoteRequest;

use super::caller::{refused, ApiCaller, Held};
use super::convert;
use super::error::HttpError;
use super::json::ApiJson;
use super::params::ApiPath;
use super::progress::run_image_op;
use super::AppState;

pub(super) fn image_error(err: ImageError) -> HttpError {
    ServiceError::from(err).into()
}

#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, description = "Every image", body = ImageList)))]
pub async fn list_images(State(state): State<AppState>) -> Result<Json<ImageList>, HttpError> {
    let images = state.images.list().map_err(image_error)?;
    Ok(Json(ImageList {
        images: images.iter().map(convert::image).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/images/{image}", tag = "images",
    params(("image" = String, Path, description = "Image name or id")),
    responses(
        (status = 200, description = "The image", body = Image),
        (status = 400, description = "The path is not valid UTF-8", body = ApiError),
        (status = 404, description = "No such image", body = ApiError)))]
pub async fn show_image(
    State(state): State<AppState>,
    ApiPath(image): ApiPath<String>,
) -> Result<Json<Image>, HttpError> {
    let image = state.images.find(&image).map_err(image_error)?;
    Ok(Json(convert::image(&image)))
}

#[utoipa::path(delete, path = "/v1/images/{image}", tag = "images",
    params(("image" = String, Path, description = "Image name or id")),
    responses(
        (status = 200, description = "The image was removed", body = Image),
        (status = 400, description = "The path is not valid UTF-8", body = ApiError),
        (status = 404, description = "No such image", body = ApiError),
        (status = 409, description = "VMs still use the image", body = ApiError),
        (status = 500, description = "Host or store failure", body = ApiError)))]
pub async fn delete_image(
    State(state): State<AppState>,
    ApiPath(image): ApiPath<String>,
) -> Result<Json<Image>, HttpError> {
    // Its warm template goes with it: the record in the same step, the
    // files once the image is gone.
    let id = state.images.find(&image).map_err(image_error)?.id;
    let templates: Vec<String> = state
        .banger
        .list_snapshots()?
        .into_iter()
        .filter(|s| s.kind == banger_core::snapshot::SnapshotKind::Template && s.image_id == id)
        .map(|s| s.id)
        .collect();
    let image = state.images.delete(&id).await.map_err(image_error)?;
    if let Err(err) = state.banger.remove_snapshot_files(&templates) {
        tracing::warn!(error = %err, "snapshot files remain; they go at the next daemon start");
    }
    Ok(Json(convert::image(&image)))
}

#[utoipa::path(post, path = "/v1/images/build", tag = "images", request_body = ImageBuildRequest,
    responses(
        (status = 201, description = "The image was built", body = Image),
        (status = 200, description = "Progress stream (`Accept: application/x-ndjson`)",
            body = ProgressEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 409, description = "The name is taken", body = ApiError),
        (status = 500, description = "The build failed", body = ApiError),
        (status = 501, description = "This host cannot make images (a tool or the guest binary is missing)", body = ApiError),
        (status = 502, description = "The Debian mirror failed", body = ApiError)))]
pub async fn build_image(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ImageBuildRequest>,
) -> Result<Response, HttpError> {
    let recipe = BuildRecipe {
        suite: request
            .suite
            .map_or_else(|| "bookworm".into(), |suite| suite.into_inner()),
        packages: request.packages.into_iter().map(String::from).collect(),
    };
    let name = request.name.into_inner();
    state
        .images
        .precheck(Some(&name), &ImageRequest::Build(recipe.clone()))
        .map_err(image_error)?;
    let images = state.images.clone();
    run_image_op(
        &headers,
        StatusCode::CREATED,
        Box::new(move |progress| {
            Box::pin(async move { images.build(&name, recipe, &*progress).await })
        }),
    )
    .await
}

#[utoipa::path(post, path = "/v1/images/pull", tag = "images", request_body = ImagePullRequest,
    responses(
        (status = 201, description = "The image was pulled", body = Image),
        (status = 200, description = "Progress stream (`Accept: application/x-ndjson`)",
            body = ProgressEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 403, description = "The bundle path is inside banger's own directories, or a member's source is plain HTTP or on this host", body = ApiError),
        (status = 404, description = "No such bundle file (or not readable by the caller), or no such `kernel_from` image", body = ApiError),
        (status = 409, description = "The name is taken", body = ApiError),
        (status = 422, description = "The source cannot be used as asked (not a bundle, a reference too long, no linux/amd64 image, `kernel_from` for a bundle)", body = ApiError),
        (status = 500, description = "The download or its checks failed", body = ApiError),
        (status = 501, description = "This host cannot make images (a tool or the guest binary is missing)", body = ApiError),
        (status = 502, description = "The registry or the bundle's server could not be reached or failed", body = ApiError)))]
pub async fn pull_image(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ImagePullRequest>,
) -> Result<Response, HttpError> {
    // The source, name and sha256 are checked by their types.
    let mut source = PullSource::parse(
        request.source.as_str(),
        request.sha256.map(|s| s.as_str().to_lowercase()),
        state.images.catalog(),
    );
    let mut name = request.name.map(String::from);
    // A bundle on the host is read with the caller's rights.
    let mut held = Held::default();
    if let PullSource::Url { url, .. } = &mut source {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            let path = url.strip_prefix("file://").unwrap_or(url);
            let path = host_path(&state, caller, path, "bundle")?;
            *url = held.open(caller, path)?.display().to_string();
        }
    }
    if let PullSource::Oci {
        reference,
        kernel_from,
        ..
    } = &mut source
    {
        // The pattern has refused what the parser would, but a length.
        let parsed = banger_oci::ImageRef::parse(reference)
            .map_err(|err| HttpError::new(ErrorCode::Unprocessable, err.to_string(), err.hint()))?;
        name.get_or_insert_with(|| parsed.default_name());
        // Checked here so that a bad one is a 400 with a hint.
        kernel_choice(&state, request.kernel_from.as_deref())?;
        kernel_from.clone_from(&request.kernel_from);
    } else if request.kernel_from.is_some() {
        return Err(HttpError::new(
            ErrorCode::Unprocessable,
            "kernel_from is for OCI images",
            Some("bundles and catalog images bring their own kernel: leave kernel_from out"),
        ));
    }
    if !caller.is_root() {
        member_source(&state, &source)?;
        if let PullSource::Oci { auth, .. } = &mut source {
            *auth = banger_core::image_maker::RegistryAuth::User {
                uid: caller.uid,
                gid: caller.gid,
            };
        }
    }
    let pull = state.images.pull_request(&source).map_err(image_error)?;
    let checked_name = match (&name, &source) {
        (Some(name), _) => Some(name.as_str()),
        (None, PullSource::Catalog(entry)) => Some(entry.as_str()),
        (None, _) => None,
    };
    state
        .images
        .precheck(checked_name, &pull)
        .map_err(image_error)?;
    let images = state.images.clone();
    run_image_op(
        &headers,
        StatusCode::CREATED,
        Box::new(move |progress| {
            Box::pin(async move {
                let pulled = images.pull(source, name.as_deref(), &*progress).await;
                drop(held);
                pulled
            })
        }),
    )
    .await
}

#[utoipa::path(post, path = "/v1/images/register", tag = "images",
    request_body = ImageRegisterRequest,
    responses(
        (status = 201, description = "The image was registered", body = Image),
        (status = 200, description = "Progress stream (`Accept: application/x-ndjson`)",
            body = ProgressEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 403, description = "A path is inside banger's own directories", body = ApiError),
        (status = 404, description = "A file is missing (or not readable by the caller), or no such `kernel_from` image", body = ApiError),
        (status = 409, description = "The name is taken", body = ApiError),
        (status = 422, description = "A file is of the wrong kind, or fields exclude each other", body = ApiError),
        (status = 500, description = "Copying or checking failed", body = ApiError),
        (status = 501, description = "This host cannot make images (a tool or the guest binary is missing)", body = ApiError)))]
pub async fn register_image(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ImageRegisterRequest>,
) -> Result<Response, HttpError> {
    // Every file is opened with the caller's rights and read through
    // the open handle, never again through the caller's path.
    let mut held = Held::default();
    let kernel = match (&request.kernel, &request.kernel_from) {
        (Some(_), Some(_)) => {
            return Err(HttpError::new(
                ErrorCode::Unprocessable,
                "give either a kernel or kernel_from, not both",
                Some("kernel names a file, kernel_from an image: keep one"),
            ))
        }
        (Some(kernel), None) => KernelChoice::File(held.open(
            caller,
            host_path(&state, caller, kernel.as_str(), "kernel")?,
        )?),
        (None, kernel_from) => kernel_choice(&state, kernel_from.as_deref())?,
    };
    if request.initrd.is_some() && request.kernel.is_none() {
        return Err(HttpError::new(
            ErrorCode::Unprocessable,
            "an initrd of your own needs its kernel",
            Some("give kernel with initrd, or leave both out and banger makes the rootfs bootable"),
        ));
    }
    if request.no_work_seed && request.work_seed.is_some() {
        return Err(HttpError::new(
            ErrorCode::Unprocessable,
            "give either a work seed or no_work_seed, not both",
            None,
        ));
    }
    let mut open = |path: Option<&HostPath>, what: &str| -> Result<Option<PathBuf>, HttpError> {
        path.map(|p| held.open(caller, host_path(&state, caller, p.as_str(), what)?))
            .transpose()
    };
    let initrd = open(request.initrd.as_ref(), "initrd")?;
    let rootfs = open(Some(&request.rootfs), "rootfs")?.unwrap_or_default();
    let work_seed = open(request.work_seed.as_ref(), "work seed")?;
    let files = RegisterFiles {
        kernel,
        initrd,
        rootfs,
        work_seed,
        no_work_seed: request.no_work_seed,
        shown: held.shown(),
    };
    let name = request.name.into_inner();
    state
        .images
        .precheck(Some(&name), &ImageRequest::Register(files.clone()))
        .map_err(image_error)?;
    let images = state.images.clone();
    run_image_op(
        &headers,
        StatusCode::CREATED,
        Box::new(move |progress| {
            Box::pin(async move {
                let registered = images.register(&name, files, &*progress).await;
                drop(held);
                registered
            })
        }),
    )
    .await
}

#[utoipa::path(post, path = "/v1/images/{image}/export", tag = "images",
    request_body = ImageExportRequest,
    params(("image" = String, Path, description = "Image name or id")),
    responses(
        (status = 200, description = "The bundle was written; with `Accept: application/x-ndjson`, a progress stream ending with the image",
            content((Image = "application/json"), (ProgressEvent = "application/x-ndjson"))),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 403, description = "The caller may not create the file there, or it is inside banger's own directories", body = ApiError),
        (status = 404, description = "No such image, or the file's directory does not exist", body = ApiError),
        (status = 409, description = "The file exists", body = ApiError),
        (status = 422, description = "The file cannot be made there (a name too long, not a directory)", body = ApiError),
        (status = 500, description = "Writing failed", body = ApiError)))]
pub async fn export_image(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    headers: HeaderMap,
    ApiPath(image): ApiPath<String>,
    ApiJson(request): ApiJson<ImageExportRequest>,
) -> Result<Response, HttpError> {
    let file = host_path(&state, caller, request.file.as_str(), "bundle file")?;
    state.images.find(&image).map_err(image_error)?;
    if caller.sees(&file) {
        return Err(image_error(ImageError::ExportTarget(
            file.display().to_string(),
        )));
    }
    // The caller's new file, made with its rights; published whole or
    // removed (also when the client goes away).
    let out = caller.create_new(&file).map_err(refused)?;
    let images = state.images.clone();
    run_image_op(
        &headers,
        StatusCode::OK,
        Box::new(move |progress| {
            Box::pin(async move {
                let written = out.file().map_err(|err| {
                    MakeError::failed(format!("cannot write {}: {err}", file.display()), None)
                })?;
                let image = images.export(&image, written, &file, &*progress).await?;
                out.publish()
                    .map_err(|err| MakeError::failed(err.to_string(), Some(err.hint())))?;
                Ok::<_, ImageError>(image)
            })
        }),
    )
    .await
}

#[utoipa::path(get, path = "/v1/catalog", tag = "images",
    responses((status = 200, description = "The image catalog", body = CatalogList)))]
pub async fn catalog(State(state): State<AppState>) -> Result<Json<CatalogList>, HttpError> {
    let local: Vec<String> = state
        .images
        .list()
        .map_err(image_error)?
        .into_iter()
        .map(|i| i.name)
        .collect();
    let entries = state
        .images
        .catalog()
        .entries()
        .iter()
        .map(|entry| {
            let (kind, from) = match &entry.recipe {
                Recipe::Build(recipe) => ("build", recipe.suite.clone()),
                Recipe::Bundle(bundle) => ("bundle", bundle.url.clone()),
            };
            CatalogEntry {
                name: entry.name.clone(),
                description: entry.description.clone(),
                kind: kind.into(),
                from,
                local: local.contains(&entry.name),
            }
        })
        .collect();
    Ok(Json(CatalogList { entries }))
}

/// The kernel of a userland without one of its own: `kernel_from`'s (an
/// image that must exist), else the default image's when it is here.
fn kernel_choice(state: &AppState, kernel_from: Option<&str>) -> Result<KernelChoice, HttpError> {
    state.images.kernel_fallback(kernel_from).map_err(|err| {
        // The status of the image error (404 for an unknown image).
        let message = format!("kernel_from: {err}");
        let mut http = image_error(err);
        http.0.error.message = message;
        http.0.error.hint = Some("name an image on this host (banger image ls)".into());
        http
    })
}

#[utoipa::path(post, path = "/v1/images/prune", tag = "images",
    responses(
        (status = 200, description = "Cached layers no image references were removed", body = PruneReport),
        (status = 500, description = "Host or store failure", body = ApiError)))]
pub async fn prune_images(State(state): State<AppState>) -> Result<Json<PruneReport>, HttpError> {
    Ok(Json(state.images.prune().map_err(image_error)?))
}

/// A path a request names on the daemon's host: absolute (the CLI makes
/// it so) and outside banger's own state and runtime directories, which
/// the daemon (root) must not be steered into reading or writing.
/// Refuses a member's pull from a source only root may use: plain HTTP
/// or this host's own addresses (the daemon would fetch them as root),
/// unless `member_sources` lists it.
fn member_source(state: &AppState, source: &PullSource) -> Result<(), HttpError> {
    let (host, plain) = match source {
        PullSource::Url { url, .. }
            if url.starts_with("http://") || url.starts_with("https://") =>
        {
            let Some(authority) = url
                .parse::<hyper::Uri>()
                .ok()
                .and_then(|uri| uri.authority().map(|a| a.as_str().to_string()))
            else {
                return Ok(());
            };
            (authority, url.starts_with("http://"))
        }
        PullSource::Oci { reference, .. } => {
            let Ok(parsed) = banger_oci::ImageRef::parse(reference) else {
                return Ok(());
            };
            let insecure = parsed.plain_http(&state.insecure_registries);
            (parsed.registry().to_string(), insecure)
        }
        _ => return Ok(()),
    };
    let host_only = host.rsplit_once('@').map_or(host.as_str(), |(_, h)| h);
    let local = banger_oci::reference::is_local(host_only);
    if (plain || local) && !state.member_sources.iter().any(|s| s == host_only) {
        return Err(HttpError::new(
            ErrorCode::Forbidden,
            format!("only root may pull from {host_only} (plain http, or this host's own address)"),
            Some("use an https source on another host, or ask root to list it in member_sources in bangerd's config"),
        ));
    }
    Ok(())
}

fn host_path(
    state: &AppState,
    caller: banger_host::caller::Caller,
    path: &str,
    what: &str,
) -> Result<PathBuf, HttpError> {
    let path = absolute(path, what)?;
    // The file itself when it exists, else its directory: links resolved
    // with the caller's rights (what it cannot see stays unresolved, and
    // opening it with those rights fails as for a missing file).
    let resolved = caller.with_rights(|| {
        std::fs::canonicalize(&path).or_else(|_| {
            let parent = path.parent().unwrap_or(std::path::Path::new("/"));
            std::fs::canonicalize(parent).map(|dir| dir.join(path.file_name().unwrap_or_default()))
        })
    });
    let resolved = resolved.unwrap_or_else(|_| path.clone());
    for own in [&state.state_dir, &state.run_dir] {
        let own = std::fs::canonicalize(own).unwrap_or_else(|_| own.clone());
        if resolved.starts_with(&own) {
            return Err(HttpError::new(
                ErrorCode::Forbidden,
                format!(
                    "{what} path {} is inside banger's own {}",
                    path.display(),
                    own.display()
                ),
                Some("give a path of your own; to boot with an image's kernel use kernel_from"),
            ));
        }
    }
    Ok(path)
}

/// Paths in requests are on the daemon's host and absolute (the CLI
/// makes them so); request paths are `HostPath`s, bundle sources are
/// checked here.
fn absolute(path: &str, what: &str) -> Result<PathBuf, HttpError> {
    HostPath::check(path).map_err(|err| {
        HttpError::new(
            ErrorCode::InvalidInput,
            format!("{what}: {err}"),
            Some("give an absolute path on the daemon's host"),
        )
    })?;
    Ok(PathBuf::from(path))
}

#[utoipa::path(post, path = "/v1/vms/{vm}/promote", tag = "images",
    request_body = VmPromoteRequest,
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 201, description = "The new image: the VM's changes as a layer over its image, its `/root` as the work seed; the VM runs on (paused for the copy) or stays stopped", body = Image),
        (status = 200, description = "Progress stream (`Accept: application/x-ndjson`); closing it cancels the promote",
            body = ProgressEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "The body breaks the schema", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 409, description = "The name is taken, the VM has never started, or it is starting or stopping", body = ApiError),
        (status = 422, description = "The VM's image already has the most layers an image may have", body = ApiError),
        (status = 500, description = "The copy or its repair failed; nothing was kept", body = ApiError),
        (status = 501, description = "This host cannot promote (e2fsprogs missing, or no VMM)", body = ApiError)))]
pub async fn promote_vm(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(vm): ApiPath<String>,
    ApiJson(request): ApiJson<VmPromoteRequest>,
) -> Result<Response, HttpError> {
    let (banger, images) = (state.banger.clone(), state.images.clone());
    let name = request.name.into_inner();
    // Cancelled when a streaming client goes away: nothing is recorded,
    // staging goes, a VM paused for the copy is resumed.
    run_image_op(
        &headers,
        StatusCode::CREATED,
        Box::new(move |progress| {
            Box::pin(async move {
                banger
                    .promote_vm(&images, &vm, &name, request.no_work, &*progress)
                    .await
            })
        }),
    )
    .await
}
