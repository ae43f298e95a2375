//! `/v1/images`: list and show.

use axum::extract::{Path, State};
use axum::Json;
use banger_proto::error::ApiError;
use banger_proto::image::{Image, ImageList};

use super::convert;
use super::error::HttpError;
use super::AppState;

#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, description = "Every image", body = ImageList)))]
pub async fn list_images(State(state): State<AppState>) -> Result<Json<ImageList>, HttpError> {
    let images = state.banger.list_images()?;
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
    Ok(Json(convert::image(&state.banger.find_image(&image)?)))
}
