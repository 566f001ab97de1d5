"""A real S3 (and IAM, STS) peer for the tests: moto's server mode on a loopback port, offline.

The server runs as its own process (``moto_server`` from the test venv) and is reached with the
official SDK (boto3) through ``AWS_ENDPOINT_URL``; nothing of ours is faked. IAM authentication is
on: a request must be signed by an access key moto issued, and is allowed only by the IAM policies
of its user or role — so "another org's bucket" and "wrong credentials" are refused by the peer
itself, as AWS would. Set-up: an ``admin`` user is created while authentication is still off, then
it is switched on (``POST /moto-api/reset-auth 0``); everything after is signed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.server import free_port

ACCOUNT = "123456789012"  # moto's default account


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str

    def body(self) -> dict[str, str]:
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}


def read_policy(*buckets: str) -> dict[str, Any]:
    """List and read everything in ``buckets`` (what a customer grants the service)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{b}" for b in buckets]},
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{b}/*" for b in buckets]},
        ],
    }


ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


class MotoServer:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin: Keys | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        binary = Path(sys.executable).with_name("moto_server")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{self.endpoint}/moto-api/", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.05)
        iam = self._client("iam", Keys("AKIAUNSIGNEDSETUP000", "x" * 40))
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(ALL))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        self.admin = Keys(key["AccessKeyId"], key["SecretAccessKey"])
        switched = httpx.post(
            f"{self.endpoint}/moto-api/reset-auth", content=b"0", headers={"Content-Type": "text/plain"}
        )
        switched.raise_for_status()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _client(self, service: str, keys: Keys) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
        )

    def client(self, service: str, keys: Keys | None = None) -> Any:
        assert self.admin is not None
        return self._client(service, keys or self.admin)

    # --- IAM --------------------------------------------------------------------------------
    def user(self, name: str, policy: dict[str, Any]) -> Keys:
        """An IAM user with ``policy`` and one access key."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="policy", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])

    def delete_key(self, user: str, keys: Keys) -> None:
        self.client("iam").delete_access_key(UserName=user, AccessKeyId=keys.access_key_id)

    def role(self, name: str, *, trusted_user: str, external_id: str, policy: dict[str, Any]) -> str:
        """A role that ``trusted_user`` may assume with ``external_id``; its ARN."""
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/{trusted_user}"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
                }
            ],
        }
        iam = self.client("iam")
        arn = str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])
        iam.put_role_policy(RoleName=name, PolicyName="policy", PolicyDocument=json.dumps(policy))
        return arn

    # --- S3 ---------------------------------------------------------------------------------
    def bucket(self, name: str) -> str:
        self.client("s3").create_bucket(Bucket=name)
        return name

    def upload(self, root: Path, bucket: str, keys: list[str]) -> None:
        s3 = self.client("s3")
        for key in keys:
            s3.upload_file(str(root / key), bucket, key)

    def delete(self, bucket: str, key: str) -> None:
        self.client("s3").delete_object(Bucket=bucket, Key=key)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
