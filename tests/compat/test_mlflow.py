"""MLflow's Databricks deployments client (mlflow-skinny, pinned in requirements.txt)
against the real server, configured by DATABRICKS_HOST/DATABRICKS_TOKEN as MLflow's docs
show. MLflow calls `/api/2.0/serving-endpoints/` with a trailing slash. Each answer is
checked."""

import pytest
from conftest import digit_rows, renamed_package, upload, wait_until


def ready(client, name):
    def check():
        ep = client.get_endpoint(name)
        if ep["state"]["config_update"] == "UPDATE_FAILED":
            raise AssertionError(f"update failed: {ep}")
        return ep if ep["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"} else None

    return wait_until(check, what=f"endpoint {name} ready")


def test_create_list_get_predict_update_delete(mlflow_client):
    client = mlflow_client
    created = client.create_endpoint(
        config={
            "name": "mlf",
            "config": {
                "name": "mlf",
                "served_entities": [
                    {"entity_name": "digits", "entity_version": "1",
                     "workload_size": "Small", "scale_to_zero_enabled": False}
                ],
            },
            "tags": [{"key": "via", "value": "mlflow"}],
        }
    )
    assert created["name"] == "mlf"
    assert created["state"]["config_update"] == "IN_PROGRESS"
    assert created["tags"] == [{"key": "via", "value": "mlflow"}]
    endpoint = ready(client, "mlf")
    assert endpoint["id"] == created["id"] != "mlf"
    assert endpoint["config"]["served_entities"][0]["state"]["deployment"] == "DEPLOYMENT_READY"

    listed = client.list_endpoints()
    assert [(e["name"], e["id"]) for e in listed] == [("mlf", created["id"])]

    rows = digit_rows(2)
    answer = client.predict(endpoint="mlf", inputs={"instances": rows})
    predictions = answer["predictions"]
    assert len(predictions) == 2
    for p in predictions:
        assert p["label"] == max(range(10), key=lambda i: p["probabilities"][i])
    split = client.predict(
        endpoint="mlf",
        inputs={"dataframe_split": {"columns": [f"p{i}" for i in range(64)], "data": rows}},
    )
    assert split["predictions"] == predictions

    with pytest.warns(UserWarning, match="deprecated"):
        updated = client.update_endpoint(
            endpoint="mlf",
            config={"served_entities": [{"entity_name": "echo", "entity_version": "1"}]},
        )
    assert updated["state"]["config_update"] == "IN_PROGRESS"
    assert updated["pending_config"]["served_entities"][0]["entity_name"] == "echo"
    after = ready(client, "mlf")
    assert [e["name"] for e in after["config"]["served_entities"]] == ["echo-1"]
    assert after["config"]["config_version"] == 2

    # The call MLflow recommends instead of `update_endpoint`.
    config = client.update_endpoint_config(
        endpoint="mlf",
        config={"served_entities": [{"entity_name": "digits", "entity_version": "1"}]},
    )
    assert config["state"]["config_update"] == "IN_PROGRESS"
    again = ready(client, "mlf")
    assert [e["name"] for e in again["config"]["served_entities"]] == ["digits-1"]
    assert again["config"]["config_version"] == 3
    assert client.predict(endpoint="mlf", inputs={"instances": rows})["predictions"] == predictions

    tags = client.update_endpoint_tags(
        endpoint="mlf", config={"add_tags": [{"key": "stage", "value": "prod"}], "delete_tags": ["via"]}
    )
    assert tags["tags"] == [{"key": "stage", "value": "prod"}]

    assert client.delete_endpoint("mlf") == {}
    assert client.list_endpoints() == []


def test_refused_fields_surface_as_mlflow_errors(mlflow_client):
    from requests.exceptions import HTTPError

    # MLflow raises requests' HTTPError with the server's status and message.
    with pytest.raises(HTTPError, match=r"400 Client Error: field `rate_limits\[0\]\.key`") as info:
        mlflow_client.create_endpoint(
            config={
                "name": "rl",
                "config": {"served_entities": [{"entity_name": "echo", "entity_version": "1"}]},
                "rate_limits": [{"calls": 10, "renewal_period": "minute", "key": "user_group"}],
            }
        )
    assert info.value.response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert mlflow_client.list_endpoints() == []


def test_fp64_columns_arrive_exactly(mlflow_client, models, packages):
    """A column the signature declares FP64 reaches the handler exactly as sent, and comes
    back so: these doubles need 17 digits, and a fast float parser reads them one ulp off
    (it fails against a server without the exact second pass)."""
    signature = (
        "\n[signature]\n"
        'inputs = [{ name = "x", datatype = "FP64", shape = [-1] }]\n'
    )
    upload(
        models.api(),
        "echo64",
        renamed_package(packages["echo"], "echo", "echo64", lambda text: text + signature),
    )
    client = mlflow_client
    client.create_endpoint(
        config={
            "name": "echo64",
            "config": {
                "served_entities": [
                    {"entity_name": "echo64", "entity_version": "1",
                     "workload_size": "Small", "scale_to_zero_enabled": False}
                ],
            },
        }
    )
    ready(client, "echo64")
    values = [0.17004902735071079, 3816.7244344497485, 103795.96131000601, -230.76437453339406]
    assert all(len(repr(v).lstrip("-").replace(".", "")) >= 17 for v in values)
    for inputs in (
        {"dataframe_split": {"columns": ["x"], "data": [[v] for v in values]}},
        {"inputs": {"x": values}},
        {"instances": values},
    ):
        answer = client.predict(endpoint="echo64", inputs=inputs)
        # The echo handler answers its input `x` and the element counts it saw.
        assert answer["predictions"]["x"] == values, (inputs, answer)
