import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The suite runs in two processes (pyproject's addopts) on machines as small as 2 cores:
# `threads: auto` would give each of them every core. One thread each, unless set already
# (the documented override of `auto`, which the threads tests set for themselves).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# ../shared beside the repository: real models and datasets, absent on a user's machine.
SHARED = ROOT.parent / "shared"


def needs_shared(spec: Path) -> bool:
    """A shipped spec that reads ../shared says so in the command it opens with."""
    return "--allow-path ../shared" in spec.read_text(encoding="utf-8").split("\n", 1)[0]


# specs/real/ holds the specs that train the real model in ../shared (they need
# --allow-path ../shared); specs/*.yaml validate anywhere.
ALL_SPECS = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "specs" / "real").glob("*.yaml"))
# The specs every test runs over offline; those that need ../shared are SHARED_SPECS
# (tests/test_gallery.py checks them, and skips them with the reason when it is absent).
SPECS = [p for p in ALL_SPECS if not needs_shared(p)]
SHARED_SPECS = [p for p in ALL_SPECS if needs_shared(p)]


# The suite runs in two processes (pytest-xdist, `--dist loadgroup` in pyproject.toml). Each test
# file is a group, so a module's shared fixtures are made once; the tests that start processes
# meeting on a local port (tests/runtime/distributed/) are one group, run one after another: a port
# one of them picked must not be taken by another's launcher before its processes bind it.
PORT_TESTS = Path(__file__).resolve().parent / "runtime" / "distributed"


# Marked as each test is collected: xdist reads the groups in its pytest_collection_modifyitems,
# which may run before a conftest's (marked there, every file's tests were dealt to both processes,
# and a module's fixtures made twice).
def pytest_itemcollected(item):
    if item.get_closest_marker("xdist_group"):
        return
    path = Path(str(item.path)).resolve()
    group = "local-ports" if PORT_TESTS in path.parents else str(path.relative_to(ROOT))
    item.add_marker(pytest.mark.xdist_group(group))


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="Rewrite tests/golden/* from the current output (review the diff before committing).")


@pytest.fixture
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def in_root(monkeypatch):
    """Run with the repository root as the working directory, as a user would."""
    monkeypatch.chdir(ROOT)
    return ROOT


def run_cli(args, cwd=None, env=None, **kw):
    """Run `python -m ftspec ARGS` in a fresh process."""
    import subprocess

    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "ftspec", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120, **kw)


# --------------------------------------------------------------------------- a real S3 API, served here


class S3Server:
    """moto's threaded server on a local port: the S3 API as boto3 speaks it (conditional
    puts, multipart uploads, listings), with no account and no network."""

    def __init__(self):
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request, otherwise

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # What boto3's standard chain reads: the test's own keys, no ~/.aws of the machine.
        self.env = {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                    "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def bucket(self) -> str:
        import uuid

        name = f"ftspec-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server():
    pytest.importorskip("boto3")
    pytest.importorskip("flask", reason="moto's server needs flask (pip install -e .[dev])")
    server = S3Server()
    yield server
    server.server.stop()


@pytest.fixture
def s3_store(s3_server, monkeypatch) -> str:
    """A new bucket on the local S3 server, and the environment pointing boto3 at it: the
    store's URL (s3://bucket/team)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "FTSPEC_STORE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.bucket()}/team"
