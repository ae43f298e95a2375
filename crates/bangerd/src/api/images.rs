//! `/v1/images` and `/v1/catalog`: list, show, build, pull, register,
//! export, remove. The long ones answer with a progress stream when asked
//! (see `progress`); every request is checked before any slow work starts,
//! so bad input gets its own status even on a stream.

use std::path::PathBuf;

use axum::extract::{Path, State};
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

use super::caller::{refused, ApiCaller, Held};
use super::convert;
use super::error::HttpError;
use super::json::ApiJson;
use super::progress::run_image_op;
use super::AppState;

fn image_error(err: ImageError) -> HttpError {
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
        (status = 404, description = "No such image", body = ApiError)))]
pub async fn show_image(
    State(state): State<AppState>,
    Path(image): Path<String>,
) -> Result<Json<Image>, HttpError> {
    let image = state.images.find(&image).map_err(image_error)?;
    Ok(Json(convert::image(&image)))
}

#[utoipa::path(delete, path = "/v1/images/{image}", tag = "images",
    params(("image" = String, Path, description = "Image name or id")),
    responses(
        (status = 200, description = "The image was removed", body = Image),
        (status = 404, description = "No such image", body = ApiError),
        (status = 409, description = "VMs still use the image", body = ApiError),
        (status = 500, description = "Host or store failure", body = ApiError)))]
pub async fn delete_image(
    State(state): State<AppState>,
    Path(image): Path<String>,
) -> Result<Json<Image>, HttpError> {
    let image = state.images.delete(&image).await.map_err(image_error)?;
    Ok(Json(convert::image(&image)))
}

#[utoipa::path(post, path = "/v1/images/build", tag = "images", request_body = ImageBuildRequest,
    responses(
        (status = 201, description = "The image was built", body = Image),
        (status = 200, description = "Progress stream (`Accept: application/x-ndjson`)",
            body = ProgressEvent, content_type = "application/x-ndjson"),
        (status = 400, description = "Bad input", body = ApiError),
        (status = 409, description = "The name is taken", body = ApiError),
        (status = 500, description = "The build failed", body = ApiError)))]
pub async fn build_image(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ImageBuildRequest>,
) -> Result<Response, HttpError> {
    let recipe = BuildRecipe {
        suite: request.suite.unwrap_or_else(|| "bookworm".into()),
        packages: request.packages,
    };
    let name = request.name;
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
        (status = 400, description = "Bad input or an unknown catalog name", body = ApiError),
        (status = 409, description = "The name is taken", body = ApiError),
        (status = 500, description = "The download or its checks failed", body = ApiError)))]
pub async fn pull_image(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ImagePullRequest>,
) -> Result<Response, HttpError> {
    if let Some(sha) = &request.sha256 {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HttpError::new(
                ErrorCode::InvalidInput,
                format!("bad sha256 {sha:?}: it must be 64 hex digits"),
                Some("copy the digest from the bundle's publisher, or leave it out"),
            ));
        }
    }
    let mut source = PullSource::parse(
        &request.source,
        request.sha256.map(|s| s.to_lowercase()),
        state.images.catalog(),
    );
    let mut name = request.name;
    // A bundle on the host is read with the caller's rights.
    let mut held = Held::default();
    if let PullSource::Url { url, .. } = &mut source {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            let path = url.strip_prefix("file://").unwrap_or(url);
            let path = host_path(&state, path, "bundle")?;
            *url = held.open(caller, path)?.display().to_string();
        }
    }
    if let PullSource::Oci {
        reference,
        kernel_from,
    } = &mut source
    {
        let parsed = banger_oci::ImageRef::parse(reference)
            .map_err(|err| HttpError::new(ErrorCode::InvalidInput, err.to_string(), err.hint()))?;
        name.get_or_insert_with(|| parsed.default_name());
        // Checked here so that a bad one is a 400 with a hint.
        kernel_choice(&state, request.kernel_from.as_deref())?;
        kernel_from.clone_from(&request.kernel_from);
    } else if request.kernel_from.is_some() {
        return Err(HttpError::new(
            ErrorCode::InvalidInput,
            "kernel_from is for OCI images",
            Some("bundles and catalog images bring their own kernel: leave kernel_from out"),
        ));
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
        (status = 400, description = "A file is missing or of the wrong kind", body = ApiError),
        (status = 409, description = "The name is taken", body = ApiError),
        (status = 500, description = "Copying or checking failed", body = ApiError)))]
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
                ErrorCode::InvalidInput,
                "give either a kernel or kernel_from, not both",
                Some("kernel names a file, kernel_from an image: keep one"),
            ))
        }
        (Some(kernel), None) => {
            KernelChoice::File(held.open(caller, host_path(&state, kernel, "kernel")?)?)
        }
        (None, kernel_from) => kernel_choice(&state, kernel_from.as_deref())?,
    };
    if request.initrd.is_some() && request.kernel.is_none() {
        return Err(HttpError::new(
            ErrorCode::InvalidInput,
            "an initrd of your own needs its kernel",
            Some("give kernel with initrd, or leave both out and banger makes the rootfs bootable"),
        ));
    }
    let mut open = |path: Option<&str>, what: &str| -> Result<Option<PathBuf>, HttpError> {
        path.map(|p| held.open(caller, host_path(&state, p, what)?))
            .transpose()
    };
    let initrd = open(request.initrd.as_deref(), "initrd")?;
    let rootfs = open(Some(&request.rootfs), "rootfs")?.unwrap_or_default();
    let work_seed = open(request.work_seed.as_deref(), "work seed")?;
    let files = RegisterFiles {
        kernel,
        initrd,
        rootfs,
        work_seed,
        no_work_seed: request.no_work_seed,
        shown: held.shown(),
    };
    if files.no_work_seed && files.work_seed.is_some() {
        return Err(HttpError::new(
            ErrorCode::InvalidInput,
            "give either a work seed or no_work_seed, not both",
            None,
        ));
    }
    let name = request.name;
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
        (status = 200, description = "The bundle was written (or, with `Accept: application/x-ndjson`, a progress stream)",
            body = Image),
        (status = 400, description = "The target exists or is not an absolute path", body = ApiError),
        (status = 404, description = "No such image", body = ApiError),
        (status = 500, description = "Writing failed", body = ApiError)))]
pub async fn export_image(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    headers: HeaderMap,
    Path(image): Path<String>,
    ApiJson(request): ApiJson<ImageExportRequest>,
) -> Result<Response, HttpError> {
    let file = host_path(&state, &request.file, "bundle file")?;
    state.images.find(&image).map_err(image_error)?;
    if file.symlink_metadata().is_ok() {
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
                Ok(image)
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
        HttpError::new(
            ErrorCode::InvalidInput,
            format!("kernel_from: {err}"),
            Some("name an image on this host (banger image ls)"),
        )
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
fn host_path(state: &AppState, path: &str, what: &str) -> Result<PathBuf, HttpError> {
    let path = absolute(path, what)?;
    // The file itself when it exists, else its directory: links resolved.
    let resolved = std::fs::canonicalize(&path).or_else(|_| {
        let parent = path.parent().unwrap_or(std::path::Path::new("/"));
        std::fs::canonicalize(parent).map(|dir| dir.join(path.file_name().unwrap_or_default()))
    });
    let resolved = resolved.unwrap_or_else(|_| path.clone());
    for own in [&state.state_dir, &state.run_dir] {
        let own = std::fs::canonicalize(own).unwrap_or_else(|_| own.clone());
        if resolved.starts_with(&own) {
            return Err(HttpError::new(
                ErrorCode::InvalidInput,
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

/// Paths in requests are on the daemon's host and must be absolute (the
/// CLI makes them so).
fn absolute(path: &str, what: &str) -> Result<PathBuf, HttpError> {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(HttpError::new(
            ErrorCode::InvalidInput,
            format!("{what} path {} is not absolute", path.display()),
            Some("give an absolute path on the daemon's host"),
        ))
    }
}
