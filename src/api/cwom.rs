//! HTTP routes under `/cwom`: for each kind's collection, `POST` (create) and `GET`
//! (list); for one object, `GET`, and `PATCH` on issues and runs. `PUT`/`PATCH` on the
//! immutable kinds answer 405 `immutable_object`.
//!
//! Two filters cover every path (`/cwom/<kind>` and `/cwom/<kind>/<id>`); the handler
//! picks by kind and method, so an unknown kind is a 404 and a known path with a method
//! it does not take is a 405 with the JSON error shape. Bodies are read exactly like
//! `/tasks` (same size limit, content type and malformed-JSON answers).

use futures_util::Stream;
use serde_json::Value;
use warp::filters::BoxedFilter;
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Buf, Filter, Reply};

use super::access::authorized;
use super::body::read_json_value;
use super::{ApiError, ApiState};
use crate::cwom::requests::{parse_body, IssuePatch, ListQuery, RunPatch};
use crate::cwom::types::{Object, ObjectKind};
use crate::cwom_service::Cwom;

/// Every `/cwom` route, behind the API key.
pub fn routes(state: ApiState) -> BoxedFilter<(Response,)> {
    let auth = authorized(state.access.clone());
    let max_body_bytes = state.max_body_bytes;
    let cwom = state.cwom;
    let with_cwom = warp::any().map(move || cwom.clone());
    let collection = warp::path!("cwom" / String)
        .and(auth.clone())
        .and(warp::method())
        .and(warp::query::<Vec<(String, String)>>())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::stream())
        .and(with_cwom.clone())
        .then(move |segment: String, method: Method, query, content_type, body, cwom| async move {
            let request = Request { cwom, method, content_type, max_body_bytes };
            request.collection(&segment, query, body).await.unwrap_or_else(|e| e.into_response())
        });
    let item = warp::path!("cwom" / String / String)
        .and(auth)
        .and(warp::method())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::stream())
        .and(with_cwom)
        .then(move |segment: String, id: String, method: Method, content_type, body, cwom| async move {
            let request = Request { cwom, method, content_type, max_body_bytes };
            request.item(&segment, &id, body).await.unwrap_or_else(|e| e.into_response())
        });
    collection.or(item).unify().boxed()
}

/// The `/cwom` routes in the OpenAPI document: each kind with the type it answers and the
/// type its create reads.
pub(super) fn describe(doc: &mut super::openapi::Doc) {
    use crate::cwom::requests as new;
    use crate::cwom::types as t;
    use serde_json::json;
    let repo = json!({ "name": "api", "slug": "api", "source": { "system": "github", "ref": "acme/api" } });
    let issue = json!({ "repo": { "kind": "Repo", "id": "no-such-repo" }, "title": "Fix the build", "type": "bug" });
    kind::<t::Repo, new::NewRepo>(doc, ObjectKind::Repo, repo);
    kind::<t::Issue, new::NewIssue>(doc, ObjectKind::Issue, issue);
    kind::<t::ContextPacket, new::NewContextPacket>(doc, ObjectKind::ContextPacket, json!({ "unknown_field": true }));
    kind::<t::ConstraintSnapshot, new::NewConstraintSnapshot>(doc, ObjectKind::ConstraintSnapshot, json!({}));
    let doctrine = json!({ "namespace": "eng", "name": "review", "version": "1", "type": "rule", "statement": "Every change is reviewed" });
    kind::<t::DoctrineRef, new::NewDoctrineRef>(doc, ObjectKind::DoctrineRef, doctrine);
    kind::<t::Run, new::NewRun>(doc, ObjectKind::Run, json!({ "unknown_field": true }));
    kind::<t::Artifact, new::NewArtifact>(doc, ObjectKind::Artifact, json!({ "unknown_field": true }));
    patch::<t::Issue, IssuePatch>(doc, ObjectKind::Issue);
    patch::<t::Run, RunPatch>(doc, ObjectKind::Run);
    for kind in [ObjectKind::ContextPacket, ObjectKind::ConstraintSnapshot] {
        let path = format!("/cwom/{}/{{id}}", kind.path());
        let summary = format!("Refused: a {kind} is immutable");
        let id = format!("{kind} id");
        doc.put(&path, &summary).path_param("id", &id).keyed().error(405, "`immutable_object`");
        doc.patch(&path, &summary).path_param("id", &id).keyed().error(405, "`immutable_object`");
    }
}

/// A kind's collection (create, list) and its item (get).
fn kind<T: schemars::JsonSchema, N: schemars::JsonSchema>(
    doc: &mut super::openapi::Doc,
    kind: ObjectKind,
    example: Value,
) {
    let collection = format!("/cwom/{}", kind.path());
    doc.post(&collection, &format!("Create a {kind}"))
        .body::<N>(example)
        .answers::<T>(201, &format!("The new {kind}, its path in Location"))
        .changes()
        .body_errors()
        .error(409, "Duplicate unique key (`already_exists`)")
        .error(
            422,
            "Invalid field (also a NUL anywhere in the body, named by JSON pointer, or a time outside \
             years 0001-9999), missing required field, a Ref to a missing object, or `rejected_by_store`",
        )
        .unavailable();
    doc.get(&collection, &format!("List {kind} objects, newest first"))
        .query(crate::cwom::requests::ListFilter::names(kind))
        .query_with("limit", serde_json::json!({ "type": "integer", "minimum": 1, "maximum": ListQuery::MAX_LIMIT }))
        .query_with("offset", serde_json::json!({ "type": "integer", "minimum": 0 }))
        .answers::<Vec<T>>(200, &format!("{kind} objects"))
        .keyed()
        .error(422, "Unknown filter or bad value")
        .unavailable();
    doc.get(&format!("{collection}/{{id}}"), &format!("One {kind}"))
        .path_param("id", &format!("{kind} id"))
        .answers::<T>(200, &format!("The {kind}"))
        .keyed()
        .error(404, "No such object (`object_not_found`)")
        .unavailable();
}

/// `PATCH` of a kind whose status moves (issues, runs).
fn patch<T: schemars::JsonSchema, P: schemars::JsonSchema>(doc: &mut super::openapi::Doc, kind: ObjectKind) {
    doc.patch(
        &format!("/cwom/{}/{{id}}", kind.path()),
        &format!("Update a {kind} (status moves; not out of a final status)"),
    )
    .path_param("id", &format!("{kind} id"))
    .body::<P>(serde_json::json!({ "status": "running" }))
    .answers::<T>(200, &format!("The updated {kind}"))
    .changes()
    .body_errors()
    .error(404, "No such object (`object_not_found`)")
    .error(409, "Transition out of a final status (`final_status`)")
    .error(422, "Invalid field")
    .unavailable();
}

/// What every handler needs from the request besides its path and body.
struct Request {
    cwom: Cwom,
    method: Method,
    content_type: Option<String>,
    max_body_bytes: u64,
}

fn kind_of(segment: &str) -> Result<ObjectKind, ApiError> {
    ObjectKind::from_path(segment).ok_or(ApiError::RouteNotFound)
}

fn json(object: &Object, status: StatusCode) -> Response {
    warp::reply::with_status(warp::reply::json(object), status).into_response()
}

impl Request {
    async fn collection<S, B>(self, segment: &str, query: Vec<(String, String)>, body: S) -> Result<Response, ApiError>
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        let kind = kind_of(segment)?;
        match self.method {
            Method::POST => {
                let body = self.json_body(body).await?;
                let object = self.cwom.create(kind, body).await?;
                tracing::debug!(kind = %kind, id = object.id(), "cwom object created");
                let mut res = json(&object, StatusCode::CREATED);
                let location = format!("/cwom/{}/{}", kind.path(), object.id());
                if let Ok(v) = warp::http::HeaderValue::from_str(&location) {
                    res.headers_mut().insert(warp::http::header::LOCATION, v);
                }
                Ok(res)
            }
            Method::GET => {
                let objects = self.cwom.list(&ListQuery::parse(kind, &query)?).await?;
                Ok(warp::reply::json(&objects).into_response())
            }
            _ => Err(ApiError::MethodNotAllowed),
        }
    }

    async fn item<S, B>(self, segment: &str, id: &str, body: S) -> Result<Response, ApiError>
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        let kind = kind_of(segment)?;
        match (&self.method, kind) {
            (&Method::GET, _) => Ok(json(&self.cwom.get(kind, id).await?, StatusCode::OK)),
            (&Method::PUT | &Method::PATCH, kind) if kind.is_immutable() => Err(ApiError::ImmutableObject(kind)),
            (&Method::PATCH, ObjectKind::Issue) => {
                let patch: IssuePatch = parse_body(self.json_body(body).await?)?;
                let issue = self.cwom.update_issue(id, patch).await?;
                Ok(json(&issue.into(), StatusCode::OK))
            }
            (&Method::PATCH, ObjectKind::Run) => {
                let patch: RunPatch = parse_body(self.json_body(body).await?)?;
                let run = self.cwom.update_run(id, patch).await?;
                Ok(json(&run.into(), StatusCode::OK))
            }
            _ => Err(ApiError::MethodNotAllowed),
        }
    }

    /// The body as JSON, read like `/tasks` reads it: 415, 413, then 400, then 422 for what
    /// no store can hold.
    async fn json_body<S, B>(&self, body: S) -> Result<Value, ApiError>
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        read_json_value(self.content_type.as_deref(), body, self.max_body_bytes).await
    }
}
