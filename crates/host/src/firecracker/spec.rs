//! Firecracker's own API description (`spec/firecracker-api.yaml`, the
//! vendored official Swagger 2.0 file, v1.16.1) and a small validator over
//! it: path and method exist, the body matches the body parameter's schema
//! (required fields, types, enums, minimum/maximum) and carries no field
//! the schema does not define. Used by the tests to check every request
//! banger sends, and by the test double (`double`) to refuse what
//! Firecracker would refuse.

use serde_json::{json, Value};

use super::api::FcRequest;

const SPEC_YAML: &str = include_str!("spec/firecracker-api.yaml");

/// The spec, parsed from YAML and held as JSON so bodies compare directly.
#[derive(Debug, Clone)]
pub struct ApiSpec(Value);

impl ApiSpec {
    /// Parses the embedded spec. It is a fixed, committed file (and the
    /// tests load it), so failing to parse it is a build defect.
    pub fn load() -> ApiSpec {
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(SPEC_YAML).expect("embedded firecracker api spec is valid yaml");
        ApiSpec(serde_json::to_value(yaml).expect("embedded firecracker api spec is valid json"))
    }

    /// The whole document, as JSON.
    pub fn document(&self) -> &Value {
        &self.0
    }

    /// Checks `req` against the spec; every problem found, or `Ok`.
    pub fn check_request(&self, req: &FcRequest) -> Result<(), Vec<String>> {
        let (template, item) = self
            .path_item(&req.path)
            .ok_or_else(|| vec![format!("no path in the spec matches {}", req.path)])?;
        let op = item.get(req.method.as_str()).ok_or_else(|| {
            vec![format!(
                "{template} has no {} operation",
                req.method.as_str()
            )]
        })?;
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let body_param = params.iter().find(|p| p["in"] == "body");
        let mut errs = Vec::new();
        match (body_param, &req.body) {
            (None, None) => {}
            (None, Some(_)) => errs.push(format!("{template} takes no body")),
            (Some(p), None) if p["required"] == true => {
                errs.push(format!("{template} requires a body"))
            }
            (Some(_), None) => {}
            (Some(p), Some(body)) => self.check(&p["schema"], body, "body", &mut errs),
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// Checks `value` against `#/definitions/{name}`.
    pub fn check_definition(&self, name: &str, value: &Value) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        let schema = json!({ "$ref": format!("#/definitions/{name}") });
        self.check(&schema, value, name, &mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// The `paths` entry whose template matches `path` (`{x}` matches one
    /// non-empty segment); literal templates win over templated ones.
    fn path_item(&self, path: &str) -> Option<(&str, &Value)> {
        let segs: Vec<&str> = path.split('/').collect();
        let mut best: Option<(&str, &Value, usize)> = None;
        for (template, item) in self.0["paths"].as_object()? {
            let tsegs: Vec<&str> = template.split('/').collect();
            if tsegs.len() != segs.len() {
                continue;
            }
            let mut literal = 0;
            let matches = tsegs.iter().zip(&segs).all(|(t, s)| {
                if t.starts_with('{') && t.ends_with('}') {
                    !s.is_empty()
                } else {
                    literal += 1;
                    t == s
                }
            });
            if matches && best.is_none_or(|(_, _, l)| literal > l) {
                best = Some((template, item, literal));
            }
        }
        best.map(|(t, i, _)| (t, i))
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> Result<&'a Value, String> {
        match schema.get("$ref").and_then(Value::as_str) {
            None => Ok(schema),
            Some(r) => {
                let name = r
                    .strip_prefix("#/definitions/")
                    .ok_or_else(|| format!("unsupported $ref {r}"))?;
                let def = self.0["definitions"]
                    .get(name)
                    .ok_or_else(|| format!("$ref to missing definition {name}"))?;
                self.resolve(def)
            }
        }
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errs: &mut Vec<String>) {
        let schema = match self.resolve(schema) {
            Ok(s) => s,
            Err(e) => return errs.push(format!("{at}: {e}")),
        };
        if let Some(ty) = schema.get("type").and_then(Value::as_str) {
            let ok = match ty {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "object" => value.is_object(),
                "array" => value.is_array(),
                other => {
                    errs.push(format!("{at}: unsupported schema type {other}"));
                    return;
                }
            };
            if !ok {
                errs.push(format!("{at}: expected {ty}, got {value}"));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                errs.push(format!("{at}: {value} is not one of {allowed:?}"));
            }
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if n < min {
                    errs.push(format!("{at}: {value} is below the minimum {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if n > max {
                    errs.push(format!("{at}: {value} is above the maximum {max}"));
                }
            }
        }
        if let Some(obj) = value.as_object() {
            for req in schema["required"].as_array().into_iter().flatten() {
                let req = req.as_str().unwrap_or_default();
                if !obj.contains_key(req) {
                    errs.push(format!("{at}: missing required field {req}"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let open = schema.get("additionalProperties") == Some(&Value::Bool(true));
            for (k, v) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => self.check(sub, v, &format!("{at}.{k}"), errs),
                    None if open => {}
                    None => errs.push(format!("{at}: unknown field {k}")),
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
            for (i, v) in arr.iter().enumerate() {
                self.check(items, v, &format!("{at}[{i}]"), errs);
            }
        }
    }
}
