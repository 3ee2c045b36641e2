"""The suite's own footing: the real server answers, tenants get a token of each level, and
both example packages upload as version 1."""

from conftest import LEVELS


def test_server_tenant_tokens_and_packages(models):
    api = models.api("CAN_VIEW")
    r = api.get("/api/2.0/models")
    assert r.status == 200, r.body
    names = sorted(m["name"] for m in r.body["models"])
    assert names == ["digits", "echo"], r.body
    assert set(models.tokens) == set(LEVELS)
    # Each level's token is what it says: CAN_VIEW cannot upload.
    r = api.call("POST", "/api/2.0/models/other/versions", data=b"x",
                 headers={"Content-Type": "application/gzip"})
    assert r.status == 403, (r.status, r.body)
    assert r.body["error_code"] == "PERMISSION_DENIED", r.body
