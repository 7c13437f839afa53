//! What the standard `OTEL_*` switches leave of tracing, through the real binary: a user with
//! no collector turns export off and must still be able to name a reply and its culprits by
//! trace id; the specification's SDK switch turns tracing off altogether, and the diagnosis
//! engine then names each request with an id of its own.

use crate::common::{
    client,
    process::{self, KillOnDrop},
};
use holdup::proto::FastRequest;

/// The `x-trace-id` header of a `Fast` call to `holdup serve` started with `env`.
async fn trace_id_with(env: &[(&str, &str)]) -> Option<String> {
    let serve = process::start(&process::serve_args(&[]), env, None);
    let addr = serve.addr_after("holdup listening on ");
    let _serve = KillOnDrop(Some(serve.child));
    let reply = client(addr)
        .await
        .fast(FastRequest::default())
        .await
        .expect("Fast answers");
    reply
        .metadata()
        .get("x-trace-id")
        .map(|v| v.to_str().expect("ASCII").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_export_still_gives_trace_ids() {
    let id = trace_id_with(&[("OTEL_TRACES_EXPORTER", "none")]).await;
    let id = id.expect("a trace id with OTEL_TRACES_EXPORTER=none");
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_sdk_still_names_each_request() {
    let env = [
        ("OTEL_TRACES_EXPORTER", "none"),
        ("OTEL_SDK_DISABLED", "true"),
    ];
    let first = trace_id_with(&env).await.expect("an engine-made id");
    let second = trace_id_with(&env).await.expect("an engine-made id");
    assert_eq!(first.len(), 32, "{first}");
    assert_ne!(first, second, "culprits must always be told apart");
}
