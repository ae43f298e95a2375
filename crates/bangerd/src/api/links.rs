//! The document's links: how the answer of an operation that makes a
//! resource names it for the operations behind its id (a created VM for
//! show, start, stop, exec, ...). Clients and fuzzers follow them from a
//! create to the operations that need an existing VM or image.

use serde_json::{json, Value};

/// `(path, method, status)` of each maker, the path parameter it fills,
/// and the operations that take it.
const LINKS: [(&str, &str, &str, &str, &[&str]); 4] = [
    (
        "/v1/vms",
        "post",
        "201",
        "vm",
        &[
            "show_vm",
            "update_vm",
            "start_vm",
            "stop_vm",
            "restart_vm",
            "exec",
            "logs",
            "terminal",
            "delete_vm",
        ],
    ),
    ("/v1/images/build", "post", "201", "image", IMAGE_OPERATIONS),
    ("/v1/images/pull", "post", "201", "image", IMAGE_OPERATIONS),
    (
        "/v1/images/register",
        "post",
        "201",
        "image",
        IMAGE_OPERATIONS,
    ),
];

const IMAGE_OPERATIONS: &[&str] = &["show_image", "export_image", "delete_image"];

/// Adds the links to the document, as JSON: utoipa 5.5 writes a link's
/// `operationId` as `operation_id`, which no client reads.
pub fn add(doc: &mut Value) {
    for (path, method, status, parameter, targets) in LINKS {
        let Some(response) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                escape(path)
            ))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let links: serde_json::Map<String, Value> = targets
            .iter()
            .map(|target| {
                let link = json!({
                    "operationId": target,
                    "parameters": { parameter: "$response.body#/name" },
                    "description": format!("The {parameter} this answer made"),
                });
                ((*target).to_string(), link)
            })
            .collect();
        response.insert("links".into(), Value::Object(links));
    }
}

/// A JSON pointer token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
