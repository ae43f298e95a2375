//! `POST /v1/vms/{vm}/ssh-keys`: lets public keys into a VM (the CLI
//! offers its caller's before `vm ssh`), and the one bound on how many
//! keys a request may carry.

use axum::extract::State;
use axum::Json;
use banger_proto::error::{ApiError, ErrorCode};
use banger_proto::rules::{SshPublicKey, SSH_KEYS_MAX};
use banger_proto::vm::{Vm, VmSshKeysRequest};

use super::convert;
use super::error::HttpError;
use super::json::ApiJson;
use super::params::ApiPath;
use super::AppState;

/// Refuses more keys than a request may carry.
pub fn check_count(keys: &[SshPublicKey]) -> Result<(), HttpError> {
    if keys.len() > SSH_KEYS_MAX {
        return Err(HttpError::new(
            ErrorCode::InvalidInput,
            format!(
                "{} ssh keys: a request carries at most {SSH_KEYS_MAX}",
                keys.len()
            ),
            Some("send the others in another request"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/vms/{vm}/ssh-keys", tag = "vms", request_body = VmSshKeysRequest,
    params(("vm" = String, Path, description = "VM name or id")),
    responses(
        (status = 200, description = "The keys are let in: kept for every start and, when the VM runs, in the guest already", body = Vm),
        (status = 400, description = "The body breaks the schema (a malformed key, none or more than 8)", body = ApiError),
        (status = 404, description = "No such VM", body = ApiError),
        (status = 422, description = "The VM already lets in as many keys as it may", body = ApiError),
        (status = 500, description = "The running guest could not take the keys, or a host failure", body = ApiError)))]
pub async fn authorize_ssh_keys(
    State(state): State<AppState>,
    ApiPath(vm): ApiPath<String>,
    ApiJson(request): ApiJson<VmSshKeysRequest>,
) -> Result<Json<Vm>, HttpError> {
    check_count(&request.keys)?;
    if request.keys.is_empty() {
        return Err(HttpError::new(
            ErrorCode::InvalidInput,
            "no ssh key to let in",
            Some("send at least one public key"),
        ));
    }
    let keys: Vec<String> = request.keys.into_iter().map(String::from).collect();
    let vm = state.banger.authorize_ssh_keys(&vm, &keys).await?;
    Ok(Json(convert::vm(&vm)))
}
