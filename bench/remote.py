"""The shared step store: how long a second clone takes to have a full quickstart run from
the shared store, against computing it.

    python bench/remote.py [--quick]

Two fresh repositories (a laptop and a CI machine) hold the quickstart (specs/quickstart.yaml
and its data). The laptop runs it with an empty shared store (every step computed, then
uploaded); the CI clone, with an empty local store, runs the same spec and fetches every step.
Both are `python -m ftspec run` processes timed from outside, against two kinds of shared
store: S3 (moto's server on a local port: the S3 API, boto3 and the checks of every byte,
without a network's latency or bandwidth) and a folder (a shared filesystem). Last line:
`remote compute_s=C s3_fetch_s=F ratio=R`.

--quick: the quickstart's smoke profile; the figures mean nothing (for CI: the script still runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import add_quick, say_quick  # noqa: E402

HERE = Path(__file__).resolve().parent.parent


def clone(folder: Path) -> Path:
    """The quickstart's files in a repository of their own: the spec's path."""
    for rel in ("specs/quickstart.yaml", "specs/data/support-tickets.jsonl"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / rel, folder / rel)
    shutil.copytree(HERE / "templates", folder / "templates")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    return folder / "specs" / "quickstart.yaml"


def run(spec: Path, store: str, profile: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ftspec", "run", str(spec), *profile], cwd=spec.parent.parent,
                         env={**env, "FTSPEC_STORE": store}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"ftspec run exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return seconds, out.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_quick(parser)
    args = parser.parse_args()
    say_quick(args.quick)
    profile = ["--profile", "smoke"] if args.quick else []
    try:
        import logging

        from moto.server import ThreadedMotoServer
    except ImportError:
        raise SystemExit("needs moto's server (pip install -e .[dev])") from None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**os.environ, "PYTHONPATH": str(HERE), "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], aws_access_key_id="bench",
                 aws_secret_access_key="bench", region_name="us-east-1").create_bucket(Bucket="ftspec-bench")
    try:
        with tempfile.TemporaryDirectory(prefix="ftspec-remote-") as tmp:
            tmp = Path(tmp)
            folder_store = tmp / "shared-store"
            folder_store.mkdir()
            s3 = "s3://ftspec-bench/team"
            compute, said = run(clone(tmp / "laptop"), s3, profile, env)
            uploaded = said.count("uploaded to s3://")
            fetch_s3, said_s3 = run(clone(tmp / "ci-s3"), s3, profile, env)
            fetched = said_s3.count("fetched from s3://")
            ran = said_s3.count(": running (key")
            # The folder store, filled from the laptop's local store (`ftspec push`), then fetched from.
            subprocess.run([sys.executable, "-m", "ftspec", "push", "specs/quickstart.yaml", *profile, "--store",
                            str(folder_store)], cwd=tmp / "laptop", env=env, check=True, capture_output=True)
            fetch_folder, said_folder = run(clone(tmp / "ci-folder"), str(folder_store), profile, env)
            size = sum(p.stat().st_size for p in folder_store.rglob("*") if p.is_file())
    finally:
        server.stop()
    print(f"quickstart{' (smoke profile)' if args.quick else ''}: {uploaded} steps uploaded by the laptop; "
          f"the second clone fetched {fetched} and ran {ran}; the entries hold {size / 1e6:.1f} MB")
    print(f"  {'what':<38} {'seconds':>8} {'vs computing':>13}")
    print(f"  {'laptop: compute every step (+ upload)':<38} {compute:8.1f} {'1.00x':>13}")
    print(f"  {'second clone: fetch from S3 (moto)':<38} {fetch_s3:8.1f} {compute / fetch_s3:12.1f}x")
    print(f"  {'second clone: fetch from a folder':<38} {fetch_folder:8.1f} {compute / fetch_folder:12.1f}x")
    print(f"remote compute_s={compute:.1f} s3_fetch_s={fetch_s3:.1f} ratio={compute / fetch_s3:.1f}")
    if fetched == 0 or ran:
        raise SystemExit("the second clone computed steps the shared store had")
    return 0


if __name__ == "__main__":
    sys.exit(main())
