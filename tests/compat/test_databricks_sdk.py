"""databricks-sdk (pinned in requirements.txt) against the real server, used as its docs
show: WorkspaceClient(host, token), serving_endpoints.create with the SDK's required
EndpointCoreConfigInput form, and the other serving-endpoint calls. Each answer is checked."""

import logging

import pytest
from conftest import digit_rows
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest, NotFound
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayGuardrailParameters,
    AiGatewayGuardrails,
    DataframeSplitInput,
    EndpointCoreConfigInput,
    EndpointTag,
    Route,
    ServedEntityInput,
    ServingEndpointAccessControlRequest,
    ServingEndpointPermissionLevel,
    TrafficConfig,
)


def entity(model: str, version: str = "1", **kw) -> ServedEntityInput:
    return ServedEntityInput(entity_name=model, entity_version=version, **kw)


def test_no_warning_when_the_sdk_configures_itself(models, caplog):
    with caplog.at_level(logging.DEBUG, logger="databricks.sdk"):
        w = WorkspaceClient(host=models.url, token=models.manage)
        assert list(w.serving_endpoints.list()) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], warnings
    assert w.config.host == models.url


def test_create_get_list_query_update_tags_delete(workspace, models):
    w = workspace
    created = w.serving_endpoints.create_and_wait(
        name="digits-ep",
        config=EndpointCoreConfigInput(
            name="digits-ep",
            served_entities=[entity("digits", workload_size="Small", scale_to_zero_enabled=False)],
        ),
        tags=[EndpointTag(key="team", value="ml"), EndpointTag(key="env", value="dev")],
        description="handwritten digits",
    )
    assert created.name == "digits-ep"
    assert created.state.ready.value == "READY"
    assert created.state.config_update.value == "NOT_UPDATING"
    # The id is opaque, not the name; timestamps are epoch milliseconds.
    assert created.id and created.id != "digits-ep" and "digits-ep" not in created.id
    assert created.creation_timestamp > 1_600_000_000_000
    assert created.last_updated_timestamp >= created.creation_timestamp
    assert {(t.key, t.value) for t in created.tags} == {("team", "ml"), ("env", "dev")}
    assert created.description == "handwritten digits"
    served = created.config.served_entities[0]
    assert (served.entity_name, served.entity_version, served.name) == ("digits", "1", "digits-1")
    assert served.workload_size == "Small"

    got = w.serving_endpoints.get("digits-ep")
    assert got.id == created.id
    assert got.config.served_entities[0].state.deployment.value == "DEPLOYMENT_READY"
    listed = list(w.serving_endpoints.list())
    assert [(e.name, e.id) for e in listed] == [("digits-ep", created.id)]
    assert {t.key for t in listed[0].tags} == {"team", "env"}

    # Query in all four Databricks formats; all give the same three predictions.
    rows = digit_rows(3)
    columns = [f"pixel_{i}" for i in range(64)]
    answers = {
        "dataframe_split": w.serving_endpoints.query(
            "digits-ep", dataframe_split=DataframeSplitInput(columns=columns, data=rows)
        ),
        "dataframe_records": w.serving_endpoints.query(
            "digits-ep", dataframe_records=[dict(zip(columns, r)) for r in rows]
        ),
        "instances": w.serving_endpoints.query("digits-ep", instances=rows),
        "inputs": w.serving_endpoints.query("digits-ep", inputs={"images": rows}),
    }
    first = answers["dataframe_split"].predictions
    assert len(first) == 3
    for p in first:
        assert 0 <= p["label"] <= 9
        assert len(p["probabilities"]) == 10
        assert abs(sum(p["probabilities"]) - 1.0) < 1e-3
        assert p["label"] == max(range(10), key=lambda i: p["probabilities"][i])
    for fmt, answer in answers.items():
        assert answer.predictions == first, fmt
        assert answer.served_model_name == "digits-1", fmt

    # update_config and wait: echo next to digits, 50/50.
    updated = w.serving_endpoints.update_config_and_wait(
        name="digits-ep",
        served_entities=[entity("digits"), entity("echo", max_provisioned_concurrency=2)],
        traffic_config=TrafficConfig(routes=[
            Route(served_entity_name="digits-1", traffic_percentage=50),
            Route(served_entity_name="echo-1", traffic_percentage=50),
        ]),
    )
    names = sorted(e.name for e in updated.config.served_entities)
    assert names == ["digits-1", "echo-1"]
    assert updated.config.config_version == 2
    assert updated.state.config_update.value == "NOT_UPDATING"
    routes = {r.served_entity_name: r.traffic_percentage for r in updated.config.traffic_config.routes}
    assert routes == {"digits-1": 50, "echo-1": 50}
    raw = models.api().get("/api/2.0/serving-endpoints/digits-ep/").body  # trailing slash too
    echo = next(e for e in raw["config"]["served_entities"] if e["name"] == "echo-1")
    assert echo["max_concurrency"] == 2  # Databricks' max_provisioned_concurrency
    assert echo["state"]["max_concurrency"] == 2

    # Tags: add one, overwrite one, delete one.
    tags = w.serving_endpoints.patch(
        "digits-ep",
        add_tags=[EndpointTag(key="env", value="prod"), EndpointTag(key="owner", value="ada")],
        delete_tags=["team"],
    )
    assert {(t.key, t.value) for t in tags.tags} == {("env", "prod"), ("owner", "ada")}
    again = w.serving_endpoints.get("digits-ep")
    assert {(t.key, t.value) for t in again.tags} == {("env", "prod"), ("owner", "ada")}

    w.serving_endpoints.delete("digits-ep")
    with pytest.raises(NotFound):
        w.serving_endpoints.get("digits-ep")
    assert list(w.serving_endpoints.list()) == []


def test_openapi_document_from_the_signature(workspace):
    w = workspace
    w.serving_endpoints.create_and_wait(
        name="doc", config=EndpointCoreConfigInput(name="doc", served_entities=[entity("digits")])
    )
    import json

    doc = json.loads(w.serving_endpoints.get_open_api("doc").contents.read())
    assert doc["openapi"] == "3.1.0"
    op = doc["paths"]["/serving-endpoints/doc/invocations"]["post"]
    formats = op["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert [next(iter(f["properties"])) for f in formats] == [
        "dataframe_split", "dataframe_records", "instances", "inputs"
    ]
    images = formats[3]["properties"]["inputs"]["properties"]["images"]
    assert images["items"]["items"] == {"type": "number"}
    assert images["items"]["minItems"] == 64 == images["items"]["maxItems"]
    out = op["responses"]["200"]["content"]["application/json"]["schema"]
    prediction = out["properties"]["predictions"]["items"]["properties"]
    assert prediction["label"]["type"] == "integer"
    assert prediction["probabilities"]["maxItems"] == 10
    assert "/serving-endpoints/doc/served-models/digits-1/invocations" in doc["paths"]


def test_permissions_map_onto_tokens(workspace, models):
    w = workspace
    ep = w.serving_endpoints.create_and_wait(
        name="perm", config=EndpointCoreConfigInput(name="perm", served_entities=[entity("echo")])
    )
    levels = w.serving_endpoints.get_permission_levels(ep.id)
    assert [l.permission_level.value for l in levels.permission_levels] == [
        "CAN_MANAGE", "CAN_QUERY", "CAN_VIEW"
    ]
    perms = w.serving_endpoints.get_permissions(ep.id)
    assert perms.object_id == f"/serving-endpoints/{ep.id}"
    assert perms.object_type == "serving-endpoint"
    by_principal = {
        a.service_principal_name: a.all_permissions[0] for a in perms.access_control_list
        if a.service_principal_name
    }
    # The tenant's three tokens over `*`: inherited, at their own levels.
    assert sorted(p.permission_level.value for p in by_principal.values()) == [
        "CAN_MANAGE", "CAN_QUERY", "CAN_VIEW"
    ]
    assert all(p.inherited for p in by_principal.values())
    admins = [a for a in perms.access_control_list if a.group_name == "admins"]
    assert admins[0].all_permissions[0].permission_level.value == "CAN_MANAGE"
    # Setting what holds is honoured and answered; a change is refused by name.
    same = [
        ServingEndpointAccessControlRequest(service_principal_name=sp, permission_level=p.permission_level)
        for sp, p in by_principal.items()
    ]
    assert w.serving_endpoints.set_permissions(ep.id, access_control_list=same).object_id == perms.object_id
    assert w.serving_endpoints.update_permissions(ep.id, access_control_list=same[:1]).object_id == perms.object_id
    viewer = next(sp for sp, p in by_principal.items() if p.permission_level.value == "CAN_VIEW")
    with pytest.raises(BadRequest, match=r"access_control_list\[0\]\.permission_level"):
        w.serving_endpoints.update_permissions(
            ep.id,
            access_control_list=[ServingEndpointAccessControlRequest(
                service_principal_name=viewer, permission_level=ServingEndpointPermissionLevel.CAN_MANAGE)],
        )
    with pytest.raises(BadRequest, match=r"access_control_list\[0\]\.group_name"):
        w.serving_endpoints.set_permissions(
            ep.id,
            access_control_list=[ServingEndpointAccessControlRequest(
                group_name="users", permission_level=ServingEndpointPermissionLevel.CAN_QUERY)],
        )
    with pytest.raises(NotFound):
        w.serving_endpoints.get_permissions("perm")  # the name is not the id


def test_unsupported_calls_and_fields_fail_clearly(workspace):
    w = workspace
    with pytest.raises(BadRequest, match=r"ai_gateway\.guardrails"):
        w.serving_endpoints.create(
            name="gw",
            config=EndpointCoreConfigInput(name="gw", served_entities=[entity("echo")]),
            ai_gateway=AiGatewayConfig(
                guardrails=AiGatewayGuardrails(input=AiGatewayGuardrailParameters(safety=True))
            ),
        )
    with pytest.raises(BadRequest, match=r"config\.name"):
        w.serving_endpoints.create(
            name="gw", config=EndpointCoreConfigInput(name="other", served_entities=[entity("echo")])
        )
    w.serving_endpoints.create_and_wait(
        name="gw", config=EndpointCoreConfigInput(name="gw", served_entities=[entity("echo")])
    )


def test_logs_build_logs_and_metrics_export(workspace):
    w = workspace
    w.serving_endpoints.create_and_wait(
        name="watched", config=EndpointCoreConfigInput(name="watched", served_entities=[entity("echo")])
    )
    for _ in range(2):
        w.serving_endpoints.query("watched", inputs={"x": [1.0, 2.0], "y": [3.0]})

    # logs(name, served_model_name): the handler's own log lines, newest last.
    logs = w.serving_endpoints.logs("watched", "echo-1")
    lines = [line for line in logs.logs.splitlines() if "echoing 2 tensor(s)" in line]
    assert len(lines) == 2, logs.logs
    assert all(" info [" in line for line in lines), lines

    # build_logs: what loading the served entity said.
    build = w.serving_endpoints.build_logs("watched", "echo-1")
    assert "loaded echo version 1" in build.logs, build.logs

    # export_metrics: Prometheus text of this endpoint only.
    text = w.serving_endpoints.export_metrics("watched").contents.read().decode()
    success = [
        line for line in text.splitlines()
        if line.startswith("nv_inference_request_success_total{") and 'endpoint="watched"' in line
    ]
    assert len(success) == 1 and success[0].endswith(" 2"), text
    assert "# TYPE nv_inference_request_success_total counter" in text
    assert "process_" not in text

    with pytest.raises(NotFound):
        w.serving_endpoints.logs("watched", "no-such-entity")
    with pytest.raises(NotFound):
        w.serving_endpoints.export_metrics("no-such-endpoint")
