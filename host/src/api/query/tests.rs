//! The pipeline's fallback decision (`QueryError::is_server_side`) agrees with the
//! status each error is answered with: a query falls back exactly when its answer would
//! be a 5xx.

#![allow(clippy::unwrap_used)]

use crate::api::ApiError;
use crate::blobs::BlobError;
use crate::codec::CodecError;
use crate::images::ImageError;
use crate::inference::InferenceError;
use crate::package::PackageError;
use crate::registry::RegistryError;
use crate::runtime::RuntimeError;
use crate::serving::query::QueryError;
use crate::serving::ServingError;
use std::time::Duration;

fn runtime_errors() -> Vec<RuntimeError> {
    vec![
        RuntimeError::Engine("e".into()),
        RuntimeError::InvalidComponent("c".into()),
        RuntimeError::ForbiddenImport {
            imports: vec!["wasi:sockets/tcp".into()],
        },
        RuntimeError::NotAHandler("h".into()),
        RuntimeError::Exhausted("full".into()),
        RuntimeError::Timeout {
            timeout: Duration::from_millis(10),
        },
        RuntimeError::MemoryLimit {
            limit_bytes: 1,
            requested_bytes: 2,
        },
        RuntimeError::MemoryBudget { requested_bytes: 2 },
        RuntimeError::TableLimit { limit: 1 },
        RuntimeError::FuelExhausted { fuel: 1 },
        RuntimeError::StackOverflow,
        RuntimeError::GuestPanic {
            message: "boom".into(),
        },
        RuntimeError::Trap {
            trap: "unreachable".into(),
        },
        RuntimeError::OutputTooLarge { bytes: 2, limit: 1 },
        RuntimeError::InvalidInput("bad".into()),
        RuntimeError::Unavailable("later".into()),
        RuntimeError::HandlerFailed("oops".into()),
    ]
}

fn registry_errors() -> Vec<RegistryError> {
    vec![
        RegistryError::NotFound {
            kind: "model",
            name: "m".into(),
        },
        RegistryError::AlreadyExists {
            kind: "model",
            name: "m".into(),
        },
        RegistryError::Conflict("c".into()),
        RegistryError::Storage("disk".into()),
        RegistryError::Unavailable("down".into()),
    ]
}

fn image_errors() -> Vec<ImageError> {
    let mut errors = vec![
        ImageError::Package(PackageError::Io("read".into())),
        ImageError::Package(PackageError::Corrupt {
            detail: "truncated".into(),
        }),
        ImageError::NameMismatch {
            manifest: "a".into(),
            url: "b".into(),
        },
        ImageError::Component(RuntimeError::InvalidComponent("x".into())),
        ImageError::Graph(InferenceError::UnknownEncoding("tflite".into())),
        ImageError::Graph(InferenceError::EngineUnavailable {
            engine: "onnx",
            reason: "missing".into(),
            hint: "SANDSERVE_ORT_DYLIB",
        }),
        ImageError::Graph(InferenceError::EngineLoad {
            engine: "onnx",
            path: "/x".into(),
            reason: "symbol".into(),
        }),
        ImageError::Unsupported("u".into()),
        ImageError::Blob(BlobError::Io {
            action: "reading".into(),
            source: std::io::Error::other("disk"),
        }),
        ImageError::Blob(BlobError::Unavailable("connection refused".into())),
        ImageError::Blob(BlobError::Corrupt {
            expected: crate::blobs::Digest::of(b"a"),
            actual: crate::blobs::Digest::of(b"b"),
        }),
    ];
    errors.extend(registry_errors().into_iter().map(ImageError::Registry));
    errors
}

fn serving_errors() -> Vec<ServingError> {
    let mut errors = vec![
        ServingError::InvalidConfig("c".into()),
        ServingError::UpdateInProgress("ep".into()),
        ServingError::NotReady("ep".into()),
        ServingError::NoSuchEntity {
            endpoint: "ep".into(),
            entity: "e".into(),
        },
        ServingError::NoSuchModel("m".into()),
        ServingError::Overloaded {
            entity: "e".into(),
            running: 1,
            queued: 2,
        },
        ServingError::QueueTimeout("e".into()),
        ServingError::Internal("join".into()),
    ];
    errors.extend(runtime_errors().into_iter().map(ServingError::Runtime));
    errors.extend(image_errors().into_iter().map(ServingError::Image));
    errors.extend(registry_errors().into_iter().map(ServingError::Registry));
    errors
}

#[test]
fn a_query_falls_back_exactly_when_it_would_answer_a_5xx() {
    let mut errors = vec![
        QueryError::NotAllowed("ep".into()),
        QueryError::Codec(CodecError::Json("j".into())),
        QueryError::CodecBudget { cost_bytes: 1 },
        QueryError::Output {
            entity: "e".into(),
            source: CodecError::Json("j".into()),
        },
    ];
    errors.extend(serving_errors().into_iter().map(QueryError::Serving));
    assert!(errors.len() > 40);
    for error in errors {
        let described = format!("{error:?}");
        let server_side = error.is_server_side();
        let status = ApiError::from(error).status();
        assert_eq!(
            server_side,
            status.is_server_error(),
            "{described} is answered {status}"
        );
    }
}

#[test]
fn the_pipelines_refusals_keep_their_statuses() {
    let status = |e: QueryError| ApiError::from(e).status().as_u16();
    assert_eq!(status(QueryError::NotAllowed("ep".into())), 403);
    assert_eq!(status(QueryError::Codec(CodecError::Json("j".into()))), 400);
    assert_eq!(status(QueryError::CodecBudget { cost_bytes: 1 }), 503);
    assert_eq!(
        status(QueryError::Serving(ServingError::NoSuchModel("m".into()))),
        404
    );
    assert_eq!(
        status(QueryError::Serving(ServingError::Internal("join".into()))),
        500
    );
}
