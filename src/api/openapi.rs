//! The builder of the OpenAPI 3.1 document of the HTTP API (served at `GET /openapi.json`,
//! joined by [`super::openapi_document`]).
//!
//! No schema in it is written by hand. Each resource module states its operations beside
//! its filters (`tasks::describe`, `workers::describe`, …) by naming the Rust types the route
//! parses and answers with; [`Doc`] derives their schemas with schemars (doc comments become
//! descriptions, serde attributes shape them), requests as they are deserialized and answers
//! as they are serialized, and files every named type under `#/components/schemas`.
//! `tests/integration/openapi.rs` calls every operation on a running daemon and validates the
//! answer against this document, so the routes, the types and the document move together.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// The document being built: the paths so far and the schemas they named.
pub struct Doc {
    paths: Map<String, Value>,
    /// Schemas of request bodies: how a type is read (optional fields may be left out).
    requests: SchemaGenerator,
    /// Schemas of answers: how a type is written (every field it always writes is required).
    answers: SchemaGenerator,
}

fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    })
}

impl Default for Doc {
    fn default() -> Self {
        Doc {
            paths: Map::new(),
            requests: settings().for_deserialize().into_generator(),
            answers: settings().for_serialize().into_generator(),
        }
    }
}

impl Doc {
    pub fn get(&mut self, path: &str, summary: &str) -> Op<'_> {
        self.op("get", path, summary)
    }
    pub fn post(&mut self, path: &str, summary: &str) -> Op<'_> {
        self.op("post", path, summary)
    }
    pub fn put(&mut self, path: &str, summary: &str) -> Op<'_> {
        self.op("put", path, summary)
    }
    pub fn patch(&mut self, path: &str, summary: &str) -> Op<'_> {
        self.op("patch", path, summary)
    }
    pub fn delete(&mut self, path: &str, summary: &str) -> Op<'_> {
        self.op("delete", path, summary)
    }

    fn op(&mut self, method: &str, path: &str, summary: &str) -> Op<'_> {
        let item = self.paths.entry(path.to_string()).or_insert_with(|| json!({}));
        assert!(item.get(method).is_none(), "{method} {path} described twice");
        item[method] = json!({ "summary": summary, "responses": {} });
        Op { doc: self, path: path.to_string(), method: method.to_string() }
    }

    /// The whole document. A type that is read in one shape and written in another (a CWOM
    /// object's parts, whose defaulted fields a client may leave out but an answer always
    /// holds) gets two schemas: the answer's under its name, the request's as `<name>Input`.
    pub fn finish(mut self) -> Value {
        let mut schemas = self.answers.take_definitions(true);
        let mut requests = self.requests.take_definitions(true);
        let renamed: Vec<String> = requests
            .iter()
            .filter(|(name, schema)| schemas.get(*name).is_some_and(|answer| answer != *schema))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &renamed {
            let from = format!("#/components/schemas/{name}");
            let to = format!("#/components/schemas/{name}Input");
            for schema in requests.values_mut() {
                rename_ref(schema, &from, &to);
            }
            for item in self.paths.values_mut() {
                for op in item.as_object_mut().into_iter().flat_map(|ops| ops.values_mut()) {
                    if let Some(body) = op.get_mut("requestBody") {
                        rename_ref(body, &from, &to);
                    }
                }
            }
        }
        for (name, schema) in requests {
            let name = if renamed.contains(&name) { format!("{name}Input") } else { name };
            schemas.insert(name, schema);
        }
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": "DevOps Control Tower",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "Task intake and execution. Every error body is {\"error\": code, \"message\": sentence}."
            },
            "components": {
                "schemas": schemas,
                "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "only when JCT_API_KEY is set" } }
            },
            "paths": self.paths,
        })
    }
}

/// Points every `$ref` to `from` in `value` at `to` instead.
fn rename_ref(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::Object(map) => {
            if map.get("$ref").and_then(Value::as_str) == Some(from) {
                map.insert("$ref".into(), Value::String(to.into()));
            }
            map.values_mut().for_each(|v| rename_ref(v, from, to));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_ref(v, from, to)),
        _ => {}
    }
}

/// One operation being described; every call adds to it in place.
pub struct Op<'a> {
    doc: &'a mut Doc,
    path: String,
    method: String,
}

impl Op<'_> {
    fn entry(&mut self) -> &mut Value {
        &mut self.doc.paths[&self.path][&self.method]
    }

    fn parameter(mut self, parameter: Value) -> Self {
        let entry = self.entry();
        if entry.get("parameters").is_none() {
            entry["parameters"] = json!([]);
        }
        entry["parameters"].as_array_mut().expect("parameters is an array").push(parameter);
        self
    }

    /// A `{name}` segment of the path.
    pub fn path_param(self, name: &str, description: &str) -> Self {
        self.parameter(
            json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } }),
        )
    }

    /// Optional query parameters, each a string the route parses.
    pub fn query(mut self, names: &[&str]) -> Self {
        for name in names {
            self = self
                .parameter(json!({ "name": name, "in": "query", "required": false, "schema": { "type": "string" } }));
        }
        self
    }

    /// An optional query parameter with its own schema.
    pub fn query_with(self, name: &str, schema: Value) -> Self {
        self.parameter(json!({ "name": name, "in": "query", "required": false, "schema": schema }))
    }

    /// An optional request header.
    pub fn header(self, name: &str, schema: Value) -> Self {
        self.parameter(json!({ "name": name, "in": "header", "required": false, "schema": schema }))
    }

    /// The JSON body the route reads as `T`, with an example that the route accepts (the
    /// OpenAPI test sends it).
    pub fn body<T: JsonSchema>(mut self, example: Value) -> Self {
        let schema = self.doc.requests.subschema_for::<T>().to_value();
        self.entry()["requestBody"] =
            json!({ "required": true, "content": { "application/json": { "schema": schema, "example": example } } });
        self
    }

    /// A JSON body whose shape is not one of ours (MCP's JSON-RPC), with an example.
    pub fn body_example(mut self, example: Value) -> Self {
        self.entry()["requestBody"] =
            json!({ "required": true, "content": { "application/json": { "example": example } } });
        self
    }

    /// An answer with a JSON body written from `T`.
    pub fn answers<T: JsonSchema>(mut self, status: u16, description: &str) -> Self {
        let schema = self.doc.answers.subschema_for::<T>().to_value();
        self.entry()["responses"][status.to_string()] =
            json!({ "description": description, "content": { "application/json": { "schema": schema } } });
        self
    }

    /// An answer of another media type (`/metrics`' text), or with no body.
    pub fn answers_as(mut self, status: u16, description: &str, media_type: Option<&str>) -> Self {
        let mut response = json!({ "description": description });
        if let Some(media_type) = media_type {
            response["content"] = json!({ media_type: { "schema": { "type": "string" } } });
        }
        self.entry()["responses"][status.to_string()] = response;
        self
    }

    /// An error answer: the [`ErrorBody`](super::error::ErrorBody) every error shares.
    pub fn error(self, status: u16, description: &str) -> Self {
        self.answers::<super::error::ErrorBody>(status, description)
    }

    /// The errors every route behind the key can answer.
    pub fn keyed(self) -> Self {
        self.error(401, "Missing or wrong API key (`unauthorized`)")
    }

    /// The errors of a change: the read-only key, a dashboard session without its CSRF token,
    /// another site's Origin.
    pub fn changes(self) -> Self {
        self.keyed().error(
            403,
            "The read-only key (`read_only_key`), a session request without its CSRF token (`csrf_rejected`), or another site's Origin (`cross_origin`)",
        )
    }

    /// The errors of reading a JSON body.
    pub fn body_errors(self) -> Self {
        self.error(400, "Malformed JSON (`malformed_json`)")
            .error(413, "Body larger than JCT_MAX_BODY_BYTES (`payload_too_large`)")
            .error(415, "Not application/json (`unsupported_media_type`)")
    }

    /// The store did not answer.
    pub fn unavailable(self) -> Self {
        self.error(503, "Store unavailable (`store_unavailable`)")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_builds_and_every_reference_resolves() {
        let doc = super::super::openapi_document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "{name} is referenced but not defined");
        }
        assert!(schemas.contains_key("Task") && schemas.contains_key("Error"), "{:?}", schemas.keys());
        // An answer holds every field; the request's own schema may leave defaulted ones out.
        let required = |name: &str| schemas[name]["required"].as_array().map_or(0, Vec::len);
        assert!(required("Acceptance") > required("AcceptanceInput"), "{}", schemas["AcceptanceInput"]);
        let issue_body = &doc["paths"]["/cwom/issues"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        let new_issue = issue_body["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
        assert!(
            schemas[new_issue].to_string().contains("#/components/schemas/AcceptanceInput"),
            "{}",
            schemas[new_issue]
        );
    }
}
