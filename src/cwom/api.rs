//! HTTP routes under `/cwom`.

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use super::Cwom;

/// Every `/cwom` route, behind `auth`.
pub fn routes(
    cwom: Cwom,
    auth: impl Filter<Extract = (), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    max_body_bytes: u64,
) -> BoxedFilter<(Response,)> {
    let _ = (cwom, max_body_bytes);
    warp::path("cwom").and(auth).and_then(|| async { Err::<Response, _>(warp::reject::not_found()) }).boxed()
}
