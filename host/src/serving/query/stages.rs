//! One try of a query on one served entity, stage by stage: decode, check the
//! signature, attach the raw body, invoke, encode. Large bodies and answers are decoded
//! and encoded on the tenant's share of the guest threads
//! ([`EntityRuntime::run_bulk`]), holding their cost in the server's memory budget
//! meanwhile; small ones right here, on the async worker, with no hop.

use super::super::EntityRuntime;
use super::error::QueryError;
use super::events;
use crate::codec::signature::check_request;
use crate::codec::QueryCodec;
use crate::runtime::{Request, Response};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// Query bodies and handler outputs larger than this are decoded and encoded off the
/// async worker, so that one big request cannot hold up the other connections of the
/// worker it arrived on.
pub const INLINE_CODEC_BYTES: usize = 256 * 1024;

/// Bytes of memory a request body may cost while it is decoded, per byte of body.
pub const PARSE_COST_PER_BYTE: usize = 8;

/// Bytes of memory an answer may cost while it is encoded, per byte of tensor data (a
/// 4-byte float becomes up to ~16 bytes of JSON text, and the text is buffered once).
pub const ENCODE_COST_PER_BYTE: usize = 16;

/// Tries the query on `entity`: decode (and check), invoke, encode.
pub(super) async fn attempt<C: QueryCodec>(
    context: &events::Context<'_>,
    entity: &Arc<EntityRuntime>,
    codec: &C,
    body: &Bytes,
) -> Result<C::Answer, QueryError> {
    let attempt = events::Attempt::started();
    let mut tally = events::Tally::default();
    let result = run(entity, codec, body, context.request_id, &mut tally).await;
    if let Ok(answer) = &result {
        tally.output_bytes = C::answer_bytes(answer).0;
    }
    attempt.finished(context, entity, result.as_ref().err(), &tally);
    result
}

async fn run<C: QueryCodec>(
    entity: &Arc<EntityRuntime>,
    codec: &C,
    body: &Bytes,
    request_id: &str,
    tally: &mut events::Tally,
) -> Result<C::Answer, QueryError> {
    let decoding = {
        let (entity, body) = (entity.clone(), body.clone());
        move |codec: &C| {
            let started = Instant::now();
            let decoded = decode(&entity, codec, &body);
            events::decoded(&entity, started.elapsed());
            decoded
        }
    };
    let (decoded, request) =
        codec_work(entity, body.len(), PARSE_COST_PER_BYTE, codec, decoding).await?;
    let invocation = entity.invoke(request, request_id).await?;
    tally.fuel = invocation.fuel_consumed;
    let size = output_bytes(&invocation.response);
    let encoding = {
        let entity = entity.clone();
        move |codec: &C| {
            let started = Instant::now();
            let encoded = encode(&entity, codec, decoded, invocation.response);
            events::encoded(&entity, started.elapsed());
            encoded
        }
    };
    codec_work(entity, size, ENCODE_COST_PER_BYTE, codec, encoding).await
}

/// Decodes `body` for `entity`, checks it against the entity's signature and attaches
/// the raw body when the entity's manifest asks for it.
fn decode<C: QueryCodec>(
    entity: &EntityRuntime,
    codec: &C,
    body: &[u8],
) -> Result<(C::Decoded, Request), QueryError> {
    let signature = entity.image.manifest.signature.as_ref();
    let (decoded, mut request) = codec.decode(body, signature)?;
    if let Some(signature) = signature {
        check_request(&request, signature)?;
    }
    if entity.image.manifest.raw_body {
        request.raw_body = Some(body.to_vec());
    }
    Ok((decoded, request))
}

/// Encodes `response`, which `entity` gave.
fn encode<C: QueryCodec>(
    entity: &EntityRuntime,
    codec: &C,
    decoded: C::Decoded,
    response: Response,
) -> Result<C::Answer, QueryError> {
    codec
        .encode(entity.version, decoded, response)
        .map_err(|source| QueryError::Output {
            entity: entity.name.clone(),
            source,
        })
}

/// Runs codec work over `size` bytes for `entity`'s tenant: here when small, else on
/// the tenant's share of the guest threads (`EntityRuntime::run_bulk`: shared out between
/// tenants and run in the background for a tenant whose work runs long, with its own
/// copy of `codec`), holding `size * cost_per_byte` bytes of the server's memory budget
/// while it runs (refused at once when the budget cannot hold them).
async fn codec_work<C: QueryCodec, T: Send + 'static>(
    entity: &EntityRuntime,
    size: usize,
    cost_per_byte: usize,
    codec: &C,
    work: impl FnOnce(&C) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    let cost_bytes = size.saturating_mul(cost_per_byte);
    let Some(reservation) = entity.image.handler.memory_budget().reserve(cost_bytes) else {
        return Err(QueryError::CodecBudget { cost_bytes });
    };
    if size <= INLINE_CODEC_BYTES {
        let result = work(codec);
        drop(reservation);
        result
    } else {
        let codec = codec.clone();
        entity
            .run_bulk(move || {
                let result = work(&codec);
                drop(reservation);
                result
            })
            .await?
    }
}

/// Bytes of tensor data in a handler's answer.
fn output_bytes(response: &Response) -> usize {
    response.outputs.iter().map(|t| t.data.len()).sum()
}
