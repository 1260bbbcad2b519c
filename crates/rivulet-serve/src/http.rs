//! The REST API, request for request as TensorFlow Serving's:
//!
//! - `GET /v1/models/NAME[/versions/N|/labels/L]`: version status;
//! - `GET /v1/models/NAME[/versions/N|/labels/L]/metadata`: signatures;
//! - `POST /v1/models/NAME[/versions/N|/labels/L]:predict` (also
//!   `:classify` and `:regress`, which run a signature of that method);
//! - `GET /monitoring/prometheus/metrics`.
//!
//! Errors are `{"error": "..."}` with TensorFlow Serving's status codes.

use crate::error::{Code, ServeError};
use crate::json::{self, Limits, Output};
use crate::metrics::Metrics;
use crate::models::{InFlight, Registry, Selector, Servable};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rivulet::saved_model::{LoadedSignature, DEFAULT_SIGNATURE};
use rivulet::{DType, Tensor};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// What the handlers share.
pub struct App {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(e: &ServeError) -> Response {
    let mut body = String::from("{ \"error\": ");
    json::write_str(&mut body, &e.message);
    body.push_str(" }");
    json_response(e.code.http_status(), body)
}

/// A parsed request path.
struct Route<'a> {
    model: &'a str,
    selector: Selector,
    /// `None`: status; `Some("metadata")`; `Some("predict")`...
    action: Option<&'a str>,
}

fn parse_path(path: &str) -> Result<Route<'_>, ServeError> {
    // TF Serving answers any path under /v1/ it cannot parse with 400, others with 404.
    let not_found = || ServeError::invalid(format!("Malformed request: {path}"));
    let rest =
        path.strip_prefix("/v1/models/").ok_or_else(|| ServeError::not_found(format!("Malformed request: {path}")))?;
    // A method is the suffix after the last ':' of the last segment.
    let (rest, method) = match rest.rsplit_once(':') {
        Some((r, m)) if !m.contains('/') => (r, Some(m)),
        _ => (rest, None),
    };
    let mut parts: Vec<&str> = rest.split('/').collect();
    let mut action = method;
    if method.is_none() && parts.len() > 1 && parts.last() == Some(&"metadata") {
        parts.pop();
        action = Some("metadata");
    }
    let (model, selector) = match parts.as_slice() {
        [m] => (*m, Selector::Latest),
        [m, "versions", v] => {
            let v = v.parse::<u64>().map_err(|_| ServeError::invalid(format!("Invalid version: {v}")))?;
            (*m, Selector::Version(v))
        }
        [m, "labels", l] if !l.is_empty() => (*m, Selector::Label(l.to_string())),
        _ => return Err(not_found()),
    };
    if model.is_empty() {
        return Err(not_found());
    }
    Ok(Route { model, selector, action })
}

/// The one handler: routes by path, so that `NAME:predict` (a method after
/// a colon in the last segment) parses as TensorFlow Serving does.
pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let path = uri.path();
    if path == "/monitoring/prometheus/metrics" && method == Method::GET {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.encode())
            .into_response();
    }
    let route = parse_path(path);
    // Labels from a fixed set, so that made-up paths cannot grow the metrics.
    let (model, api) = match &route {
        Ok(r) => (
            if app.registry.knows(r.model) { r.model.to_string() } else { String::new() },
            match r.action {
                None => "status",
                Some(a @ ("metadata" | "predict" | "classify" | "regress")) => a,
                Some(_) => "unknown",
            },
        ),
        Err(_) => (String::new(), "unknown"),
    };
    let result = match route {
        Err(e) => Err(e),
        Ok(r) => match (&method, r.action) {
            (&Method::GET, None) => status(&app, &r),
            (&Method::GET, Some("metadata")) => metadata(&app, &r),
            (&Method::POST, Some(m @ ("predict" | "classify" | "regress"))) => match body {
                Ok(b) => predict(&app, &r, m, &b).await,
                Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    Err(ServeError::new(Code::PayloadTooLarge, "the request body is larger than the server's limit"))
                }
                Err(rej) => Err(ServeError::invalid(format!("cannot read the request body: {}", rej.body_text()))),
            },
            _ => Err(ServeError::invalid(format!("Malformed request: {method} {path}"))),
        },
    };
    let response = match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => error_response(&e),
    };
    app.metrics.request(&model, api, response.status().as_u16(), start.elapsed().as_secs_f64());
    response
}

fn status(app: &App, r: &Route<'_>) -> Result<String, ServeError> {
    let versions = app.registry.status(r.model, &r.selector)?;
    let mut out = String::from("{\n \"model_version_status\": [");
    for (i, (v, s)) in versions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let code = if s.error.is_empty() { "OK" } else { "UNKNOWN" };
        out.push_str(&format!(
            "\n  {{\n   \"version\": \"{v}\",\n   \"state\": \"{}\",\n   \"status\": {{\n    \"error_code\": \"{code}\",\n    \"error_message\": ",
            s.state
        ));
        json::write_str(&mut out, &s.error);
        out.push_str("\n   }\n  }");
    }
    out.push_str("\n ]\n}\n");
    Ok(out)
}

/// TensorFlow's name of a dtype (`DT_FLOAT`).
fn tf_dtype(d: DType) -> &'static str {
    match d {
        DType::F32 => "DT_FLOAT",
        DType::F64 => "DT_DOUBLE",
        DType::F16 => "DT_HALF",
        DType::BF16 => "DT_BFLOAT16",
        DType::I32 => "DT_INT32",
        DType::I64 => "DT_INT64",
        DType::U8 => "DT_UINT8",
        DType::Bool => "DT_BOOL",
        DType::I8 => "DT_INT8",
        DType::I16 => "DT_INT16",
        DType::U16 => "DT_UINT16",
        DType::U32 => "DT_UINT32",
        DType::U64 => "DT_UINT64",
        DType::C64 => "DT_COMPLEX64",
        DType::C128 => "DT_COMPLEX128",
    }
}

fn tensor_info_json(info: &rivulet::saved_model::TensorInfo) -> Value {
    let dims: Vec<Value> = info
        .shape
        .iter()
        .map(|&d| {
            let size = if d == rivulet::UNKNOWN { "-1".to_string() } else { d.to_string() };
            serde_json::json!({"size": size, "name": ""})
        })
        .collect();
    serde_json::json!({
        "dtype": tf_dtype(info.dtype),
        "tensor_shape": {"dim": dims, "unknown_rank": false},
        "name": info.tensor_name,
    })
}

fn metadata(app: &App, r: &Route<'_>) -> Result<String, ServeError> {
    let s = app.registry.resolve(r.model, &r.selector)?;
    let mut defs = serde_json::Map::new();
    for name in s.model.signature_names() {
        let sig = s.model.signature(name)?;
        let side = |v: &[(rivulet::saved_model::TensorInfo, Tensor)]| -> Value {
            Value::Object(v.iter().map(|(i, _)| (i.key.clone(), tensor_info_json(i))).collect())
        };
        defs.insert(
            name.to_string(),
            serde_json::json!({"inputs": side(&sig.inputs), "outputs": side(&sig.outputs), "method_name": sig.method_name}),
        );
    }
    let body = serde_json::json!({
        "model_spec": {"name": r.model, "signature_name": "", "version": s.version.to_string()},
        "metadata": {"signature_def": {"signature_def": defs}},
    });
    serde_json::to_string_pretty(&body).map_err(|e| ServeError::new(Code::Internal, e.to_string()))
}

/// Row (`instances`) or columnar (`inputs`) request.
enum Format {
    Row,
    Columnar,
}

/// The signature's inputs from a request body, in the signature's order,
/// and the rows when every input has the same first dimension.
fn request_inputs(sig: &LoadedSignature, body: &Value, limits: Limits) -> Result<(Format, Vec<Tensor>), ServeError> {
    let obj = body.as_object().ok_or_else(|| ServeError::invalid("the request body must be a JSON object"))?;
    let (format, data) = match (obj.get("instances"), obj.get("inputs")) {
        (Some(_), Some(_)) => {
            return Err(ServeError::invalid("the request may have 'instances' or 'inputs', not both"))
        }
        (Some(d), None) => (Format::Row, d),
        (None, Some(d)) => (Format::Columnar, d),
        (None, None) => return Err(ServeError::invalid("missing 'inputs' or 'instances' key")),
    };
    let single = sig.inputs.len() == 1;
    fn named(v: &Value) -> Option<&serde_json::Map<String, Value>> {
        v.as_object().filter(|m| !m.contains_key("b64") || m.len() != 1)
    }
    let tensors = match format {
        Format::Columnar => {
            if single && named(data).is_none() {
                let (info, _) = &sig.inputs[0];
                vec![json::to_tensor(data, info.dtype, &info.key, limits)?]
            } else {
                let m = named(data).ok_or_else(|| ServeError::invalid("'inputs' must be an object of input names"))?;
                check_names(sig, m.keys())?;
                sig.inputs
                    .iter()
                    .map(|(info, _)| {
                        let v = m
                            .get(&info.key)
                            .ok_or_else(|| ServeError::invalid(format!("missing input '{}'", info.key)))?;
                        json::to_tensor(v, info.dtype, &info.key, limits)
                    })
                    .collect::<Result<_, _>>()?
            }
        }
        Format::Row => {
            let rows = data.as_array().ok_or_else(|| ServeError::invalid("'instances' must be a list"))?;
            if rows.is_empty() {
                return Err(ServeError::invalid("'instances' is empty"));
            }
            let objects = rows.iter().all(|r| named(r).is_some());
            if !single && !objects {
                return Err(ServeError::invalid(format!(
                    "the signature has {} inputs: each instance must be an object of input names",
                    sig.inputs.len()
                )));
            }
            if single && !objects {
                // The instances themselves stack into the one input.
                let (info, _) = &sig.inputs[0];
                vec![json::to_tensor(data, info.dtype, &info.key, limits)?]
            } else {
                for r in rows {
                    check_names(sig, named(r).map(|m| m.keys()).into_iter().flatten())?;
                }
                sig.inputs
                    .iter()
                    .map(|(info, _)| {
                        let column: Vec<Value> = rows
                            .iter()
                            .map(|r| {
                                named(r).and_then(|m| m.get(&info.key)).cloned().ok_or_else(|| {
                                    ServeError::invalid(format!("an instance has no input '{}'", info.key))
                                })
                            })
                            .collect::<Result<_, _>>()?;
                        json::to_tensor(&Value::Array(column), info.dtype, &info.key, limits)
                    })
                    .collect::<Result<_, _>>()?
            }
        }
    };
    for ((info, _), t) in sig.inputs.iter().zip(&tensors) {
        info.check(t).map_err(|e| ServeError::invalid(e.message().to_string()))?;
    }
    Ok((format, tensors))
}

fn check_names<'a>(sig: &LoadedSignature, names: impl IntoIterator<Item = &'a String>) -> Result<(), ServeError> {
    for n in names {
        if !sig.inputs.iter().any(|(i, _)| &i.key == n) {
            return Err(ServeError::invalid(format!("the signature has no input '{n}'")));
        }
    }
    Ok(())
}

/// The signature a request names, or the default; checked against the API's method.
fn pick_signature<'a>(
    s: &'a Servable,
    body: &Value,
    method: &str,
) -> Result<(String, &'a LoadedSignature), ServeError> {
    let name = match body.get("signature_name") {
        None => DEFAULT_SIGNATURE.to_string(),
        Some(Value::String(n)) => n.clone(),
        Some(_) => return Err(ServeError::invalid("'signature_name' must be a string")),
    };
    let sig = s
        .model
        .signature(&name)
        .map_err(|_| ServeError::invalid(format!("Serving signature name: \"{name}\" not found in signature def")))?;
    let wanted = format!("tensorflow/serving/{method}");
    if method != "predict" && sig.method_name != wanted {
        return Err(ServeError::invalid(format!(
            "Expected {method} signature method_name to be {wanted}. Was: {}",
            sig.method_name
        )));
    }
    Ok((name, sig))
}

async fn predict(app: &App, r: &Route<'_>, method: &str, body: &[u8]) -> Result<String, ServeError> {
    let servable = app.registry.resolve(r.model, &r.selector)?;
    let counted = InFlight::new(&servable);
    let request: Value =
        serde_json::from_slice(body).map_err(|e| ServeError::invalid(format!("JSON Parse error: {e}")))?;
    let (name, sig) = pick_signature(&servable, &request, method)?;
    let (format, inputs) = request_inputs(sig, &request, app.limits)?;
    let rows = inputs.first().and_then(|t| t.shape().first().copied());
    let same_rows = rows.is_some() && inputs.iter().all(|t| t.shape().first().copied() == rows);
    let outputs: Vec<Tensor> = match (servable.batchers.get(&name), same_rows) {
        (Some(b), true) => {
            let rx = b.submit(inputs, rows.unwrap_or(0))?;
            rx.await.map_err(|_| ServeError::new(Code::Unavailable, "the model version was unloaded"))??
        }
        _ => servable.model.run(&name, &inputs)?,
    };
    drop(counted);
    let outputs: Vec<Output> = outputs.iter().map(Output::new).collect::<Result<_, _>>()?;
    let names: Vec<&str> = sig.outputs.iter().map(|(i, _)| i.key.as_str()).collect();
    let mut out = String::with_capacity(64 + outputs.iter().map(|o| o.bytes.len() * 3).sum::<usize>());
    let mut buf = ryu::Buffer::new();
    match format {
        Format::Columnar => {
            out.push_str("{\"outputs\":");
            write_outputs(&mut out, &names, &outputs, None, &mut buf);
        }
        Format::Row => {
            let rows = outputs.first().and_then(Output::rows).unwrap_or(0);
            if let Some((n, _)) = names.iter().zip(&outputs).find(|(_, o)| o.rows() != Some(rows)) {
                return Err(ServeError::invalid(format!(
                    "output '{n}' does not have one row per instance: use the columnar ('inputs') format"
                )));
            }
            out.push_str(if method == "predict" { "{\"predictions\":[" } else { "{\"results\":[" });
            for row in 0..rows {
                if row > 0 {
                    out.push(',');
                }
                write_outputs(&mut out, &names, &outputs, Some(row), &mut buf);
            }
            out.push(']');
        }
    }
    out.push_str("}\n");
    Ok(out)
}

/// The outputs (whole, or one row of each): the value alone when there is
/// one output, else an object by output name, as TensorFlow Serving answers.
fn write_outputs(out: &mut String, names: &[&str], outputs: &[Output], row: Option<usize>, buf: &mut ryu::Buffer) {
    let one = |o: &Output, out: &mut String, buf: &mut ryu::Buffer| match row {
        Some(r) => o.write_row(r, out, buf),
        None => o.write(out, buf),
    };
    if let [o] = outputs {
        return one(o, out, buf);
    }
    out.push('{');
    for (i, (n, o)) in names.iter().zip(outputs).enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_str(out, n);
        out.push(':');
        one(o, out, buf);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_as_tensorflow_serving_does() {
        let r = parse_path("/v1/models/digits:predict").unwrap();
        assert_eq!((r.model, r.selector, r.action), ("digits", Selector::Latest, Some("predict")));
        let r = parse_path("/v1/models/digits/versions/3:predict").unwrap();
        assert_eq!((r.model, r.selector, r.action), ("digits", Selector::Version(3), Some("predict")));
        let r = parse_path("/v1/models/digits/labels/stable/metadata").unwrap();
        assert_eq!((r.model, r.selector, r.action), ("digits", Selector::Label("stable".into()), Some("metadata")));
        let r = parse_path("/v1/models/digits").unwrap();
        assert_eq!((r.selector, r.action), (Selector::Latest, None));
        assert!(parse_path("/v1/models/digits/versions/x").is_err());
        assert!(parse_path("/v2/models/digits").is_err());
        assert!(parse_path("/v1/models/").is_err());
        assert_eq!(parse_path("/v1/models/a/b/c/d").err().map(|e| e.code), Some(crate::error::Code::InvalidArgument));
        assert_eq!(parse_path("/v2/models/a").err().map(|e| e.code), Some(crate::error::Code::NotFound));
    }
}
