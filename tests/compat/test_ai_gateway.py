"""databricks-sdk's AI gateway calls (pinned in requirements.txt) against the real server,
used as its docs show: `serving_endpoints.put_ai_gateway` with rate limits, usage tracking
and an inference table, and the deprecated `serving_endpoints.put` with rate limits. The
limits are then checked on the wire (429 with Retry-After), the usage and the inference
table through sandserve's own routes. Each answer is checked."""

import json

from databricks.sdk.service.serving import (
    AiGatewayInferenceTableConfig,
    AiGatewayRateLimit,
    AiGatewayRateLimitKey,
    AiGatewayRateLimitRenewalPeriod,
    AiGatewayUsageTrackingConfig,
    EndpointCoreConfigInput,
    RateLimit,
    RateLimitKey,
    RateLimitRenewalPeriod,
    ServedEntityInput,
)


def header(reply, name: str) -> str:
    """A response header, whatever the case the server wrote it in."""
    return {k.lower(): v for k, v in reply.headers.items()}[name.lower()]


def create_echo(w, name: str):
    return w.serving_endpoints.create_and_wait(
        name=name,
        config=EndpointCoreConfigInput(
            name=name, served_entities=[ServedEntityInput(entity_name="echo", entity_version="1")]
        ),
    )


def test_put_ai_gateway_limits_tracks_usage_and_captures(workspace, models):
    w = workspace
    create_echo(w, "gw")
    put = w.serving_endpoints.put_ai_gateway(
        "gw",
        rate_limits=[
            AiGatewayRateLimit(
                calls=3,
                key=AiGatewayRateLimitKey.USER,
                renewal_period=AiGatewayRateLimitRenewalPeriod.MINUTE,
            )
        ],
        usage_tracking_config=AiGatewayUsageTrackingConfig(enabled=True),
        inference_table_config=AiGatewayInferenceTableConfig(
            enabled=True, catalog_name="main", schema_name="serving", table_name_prefix="gw"
        ),
    )
    assert [(r.calls, r.key, r.renewal_period) for r in put.rate_limits] == [
        (3, AiGatewayRateLimitKey.USER, AiGatewayRateLimitRenewalPeriod.MINUTE)
    ]
    assert put.usage_tracking_config.enabled is True
    assert put.inference_table_config.enabled is True
    assert put.inference_table_config.table_name_prefix == "gw"
    got = w.serving_endpoints.get("gw")
    assert got.ai_gateway.rate_limits[0].calls == 3
    assert got.ai_gateway.usage_tracking_config.enabled is True
    assert got.ai_gateway.inference_table_config.schema_name == "serving"

    answers = [w.serving_endpoints.query("gw", inputs={"x": [float(i), 2.0]}) for i in range(3)]
    assert [a.predictions["x"] for a in answers] == [[0.0, 2.0], [1.0, 2.0], [2.0, 2.0]]
    # The fourth call of this token within the minute: 429 with Retry-After, JSON body.
    api = models.api()
    refused = api.post("/serving-endpoints/gw/invocations", {"inputs": {"x": [9.0]}})
    assert refused.status == 429, refused.body
    assert 1 <= int(header(refused, "Retry-After")) <= 60
    assert refused.body["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    # Another token has calls of its own.
    query_api = models.api("CAN_QUERY")
    assert query_api.post("/serving-endpoints/gw/invocations", {"inputs": {"x": [1.0]}}).status == 200

    usage = api.get("/api/2.0/usage", params={"endpoint": "gw"})
    assert usage.status == 200, usage.body
    assert sum(r["requests"] for r in usage.body["usage"]) == 4
    assert sum(r["errors"] for r in usage.body["usage"]) == 0
    assert {r["served_entity"] for r in usage.body["usage"]} == {"echo-1"}

    lines = [json.loads(line) for line in rows_text(api, "gw").splitlines()]
    assert [r["status_code"] for r in lines] == [200, 200, 200, 200]
    assert json.loads(lines[0]["request"]) == {"inputs": {"x": [0.0, 2.0]}}


def rows_text(api, name: str) -> str:
    r = api.session.get(
        f"{api.url}/api/2.0/serving-endpoints/{name}/inference-table",
        headers={"Accept": "application/x-ndjson"},
        timeout=60,
    )
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-ndjson"
    return r.text


def test_put_rate_limits_the_deprecated_way(workspace, models):
    w = workspace
    create_echo(w, "old")
    put = w.serving_endpoints.put(
        "old",
        rate_limits=[
            RateLimit(calls=2, key=RateLimitKey.ENDPOINT, renewal_period=RateLimitRenewalPeriod.MINUTE)
        ],
    )
    assert [(r.calls, r.key, r.renewal_period) for r in put.rate_limits] == [
        (2, RateLimitKey.ENDPOINT, RateLimitRenewalPeriod.MINUTE)
    ]
    assert w.serving_endpoints.get("old").ai_gateway.rate_limits[0].calls == 2
    for _ in range(2):
        assert w.serving_endpoints.query("old", inputs={"x": [1.0, 2.0]}).predictions["x"] == [1.0, 2.0]
    # The endpoint's two are used up, for every token.
    for level in ("CAN_MANAGE", "CAN_QUERY"):
        refused = models.api(level).post("/serving-endpoints/old/invocations", {"inputs": {"x": [1.0]}})
        assert refused.status == 429, refused.body
        assert int(header(refused, "Retry-After")) >= 1
    # An empty list lifts them.
    assert w.serving_endpoints.put("old", rate_limits=[]).rate_limits in (None, [])
    assert w.serving_endpoints.query("old", inputs={"x": [1.0, 2.0]}).predictions["x"] == [1.0, 2.0]
