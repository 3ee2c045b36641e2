"""Fixtures of the client compatibility suite: the REAL sandserve binary on a free loopback
port with a temporary data folder, tenants with a token of each level, the example packages
(built with `sandserve package`), and the clients under test configured as their docs show
(databricks-sdk's WorkspaceClient, MLflow's Databricks deployments client).

The server is started once per test session; every test works in a tenant of its own, so
tests never see each other's models or endpoints.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "compat-admin-token-0123456789"
LEVELS = ("CAN_VIEW", "CAN_QUERY", "CAN_MANAGE")


def sandserve_bin() -> Path:
    """The binary under test: $SANDSERVE_BIN, else $CARGO_TARGET_DIR/debug/sandserve, else
    target/debug/sandserve (`cargo build -p sandserve-host` makes it)."""
    if os.environ.get("SANDSERVE_BIN"):
        return Path(os.environ["SANDSERVE_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "debug" / "sandserve"


def engines_env() -> dict[str, str]:
    """The exports of .engines/env.sh (written by scripts/setup-engines.sh), so the server
    finds ONNX Runtime even when the caller did not source it."""
    env: dict[str, str] = {}
    path = ROOT / ".engines" / "env.sh"
    if path.is_file():
        for line in path.read_text().splitlines():
            m = re.match(r'^export (\w+)="(.*)"$', line.strip())
            if m:
                env[m.group(1)] = m.group(2)
    return env


@dataclass
class Reply:
    """An HTTP answer: status, parsed JSON body (None when not JSON), headers."""

    status: int
    body: object
    headers: dict


class Api:
    """A plain HTTP client with one bearer token, for setup and raw checks."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs) -> Reply:
        r = self.session.request(method, self.url + path, timeout=60, **kwargs)
        try:
            body = r.json()
        except ValueError:
            body = None
        return Reply(r.status_code, body, dict(r.headers))

    def get(self, path: str, **kw) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body=None, **kw) -> Reply:
        return self.call("POST", path, json=body, **kw)

    def put(self, path: str, body=None, **kw) -> Reply:
        return self.call("PUT", path, json=body, **kw)

    def patch(self, path: str, body=None, **kw) -> Reply:
        return self.call("PATCH", path, json=body, **kw)

    def delete(self, path: str, **kw) -> Reply:
        return self.call("DELETE", path, **kw)


class Server:
    """`sandserve serve` on 127.0.0.1:0 with a data folder of its own."""

    def __init__(self, data_dir: Path):
        binary = sandserve_bin()
        if not binary.is_file():
            raise RuntimeError(
                f"{binary} is missing: build it first (`cargo build -p sandserve-host`)"
            )
        env = dict(os.environ)
        env.update({k: v for k, v in engines_env().items() if k not in os.environ})
        env.update(
            {
                "SANDSERVE_ADMIN_TOKEN": ADMIN_TOKEN,
                "SANDSERVE_ENGINES_DIR": str(ROOT / ".engines"),
                "SANDSERVE_LOG": os.environ.get("SANDSERVE_TEST_LOG", "error"),
            }
        )
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("listening on "):
                self.url = line.removeprefix("listening on ").strip()
                break
        if not self.url:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"sandserve exited before listening: {self.proc.returncode}")
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.admin = Api(self.url, ADMIN_TOKEN)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Tenant:
    """A tenant with one all-resources token per level, and an Api for each."""

    name: str
    tokens: dict[str, str]
    url: str

    def api(self, level: str = "CAN_MANAGE") -> Api:
        return Api(self.url, self.tokens[level])

    @property
    def manage(self) -> str:
        return self.tokens["CAN_MANAGE"]


def issue_token(admin: Api, tenant: str, level: str, resources=("*",)) -> str:
    r = admin.post(
        "/api/2.0/tokens",
        {"tenant": tenant, "permissions": [level], "endpoints": list(resources), "comment": "compat"},
    )
    assert r.status == 201, (r.status, r.body)
    assert r.body["token_info"]["permissions"] == [level], r.body
    return r.body["token"]


_tenant_ids = itertools.count(1)


@pytest.fixture(scope="session")
def server():
    data = Path(tempfile.mkdtemp(prefix="sandserve-compat-"))
    srv = Server(data)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def tenant(server) -> Tenant:
    """A fresh tenant with a CAN_VIEW, a CAN_QUERY and a CAN_MANAGE token."""
    name = f"compat{next(_tenant_ids)}"
    r = server.admin.post("/api/2.0/tenants", {"name": name})
    assert r.status == 201, (r.status, r.body)
    assert r.body["name"] == name
    tokens = {level: issue_token(server.admin, name, level) for level in LEVELS}
    return Tenant(name, tokens, server.url)


@pytest.fixture(scope="session")
def packages(tmp_path_factory) -> dict[str, bytes]:
    """The echo and digits examples, packed by `sandserve package` (which builds the
    handler crate; digits needs scripts/setup-engines.sh's model files)."""
    out = tmp_path_factory.mktemp("packages")
    built = {}
    for name in ("echo", "digits"):
        archive = out / f"{name}.tar.gz"
        subprocess.run(
            [str(sandserve_bin()), "package", str(ROOT / "examples" / name), "-o", str(archive)],
            check=True,
            cwd=ROOT,
        )
        built[name] = archive.read_bytes()
    return built


def renamed_package(package: bytes, old: str, new: str, edit=lambda text: text) -> bytes:
    """The package of model `old` as model `new`, its sandserve.toml (which stays first, as
    packed) changed by `edit` as well (text in, text out)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(package), mode="r:gz") as src, tarfile.open(
        fileobj=out, mode="w:gz"
    ) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "sandserve.toml":
                text = data.decode().replace(f'name = "{old}"', f'name = "{new}"', 1)
                data = edit(text).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def upload(api: Api, model: str, package: bytes) -> dict:
    """Uploads a package as the model's next version and returns the version record."""
    r = api.call(
        "POST",
        f"/api/2.0/models/{model}/versions",
        data=package,
        headers={"Content-Type": "application/gzip"},
    )
    assert r.status == 201, (r.status, r.body)
    assert r.body["name"] == model, r.body
    return r.body


@pytest.fixture
def models(tenant, packages) -> Tenant:
    """The tenant with `echo` v1 and `digits` v1 uploaded."""
    for name in ("echo", "digits"):
        record = upload(tenant.api(), name, packages[name])
        assert record["version"] == 1, record
    return tenant


def wait_until(check, timeout: float = 60.0, what: str = "condition"):
    """Polls `check()` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def workspace(models):
    """databricks-sdk's WorkspaceClient for the tenant's CAN_MANAGE token, as its docs show
    (explicit host and token; no config file is read)."""
    from databricks.sdk import WorkspaceClient

    return WorkspaceClient(host=models.url, token=models.manage)


@pytest.fixture
def mlflow_client(models, monkeypatch):
    """MLflow's Databricks deployments client, configured by DATABRICKS_HOST/TOKEN as
    MLflow's docs show."""
    monkeypatch.setenv("DATABRICKS_HOST", models.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", models.manage)
    from mlflow.deployments import get_deploy_client

    return get_deploy_client("databricks")


def digit_rows(n: int) -> list[list[float]]:
    """`n` rows of the digits test set (pixel intensities 0..=16), from the files
    scripts/setup-engines.sh generates."""
    import array

    values = array.array("f")
    values.frombytes((ROOT / "examples/digits/model/test_inputs.f32").read_bytes())
    return [[float(v) * 16.0 for v in values[i * 64 : (i + 1) * 64]] for i in range(n)]
