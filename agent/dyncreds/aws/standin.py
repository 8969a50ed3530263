"""The embedded AWS stand-in: moto's server on loopback with IAM enforcement,
an administrator service account, and the helpers that start a real agent
against it. Used by ``dyncreds demo``, the tests and the benchmarks. It lives
under ``aws/`` because it imports boto3 (and moto); it plays AWS rather than
talking to it, and nothing in the agent's code path imports it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dyncreds.aws.rootkeys import StaticKeys, write_credentials_file
from dyncreds.client import Client, CliError
from dyncreds.leases import Secret

ACCOUNT = "123456789012"
EC2_ONLY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}],
}
ADMIN = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
TRUST_VAULTUSER = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/vaultuser"},
            "Action": "sts:AssumeRole",
        }
    ],
}


class StandIn:
    """moto's server on 127.0.0.1 with IAM enforcement, and an admin client."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise SystemExit(
                "dyncreds demo needs the AWS stand-in (moto), which this install lacks: "
                "`pipx inject dyncreds 'moto[server]'` adds it to a pipx install "
                "(`pip install 'moto[server]'` to a venv), or install './dyncreds[demo]'"
            ) from None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.admin_keys: dict[str, str] = {}

    def client(self, service: str, **keys: Any) -> Any:
        import boto3

        keys = keys or {
            "aws_access_key_id": self.admin_keys["AccessKeyId"],
            "aws_secret_access_key": self.admin_keys["SecretAccessKey"],
        }
        return boto3.client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint, region_name="us-east-1", **keys
        )

    def bootstrap(self, admin_user: str = "vaultuser") -> dict[str, str]:
        """Create the service-account user, then turn IAM enforcement on."""
        iam = self.client("iam", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName=admin_user)
        iam.put_user_policy(
            UserName=admin_user, PolicyName="administrator", PolicyDocument=json.dumps(ADMIN)
        )
        self.admin_keys = iam.create_access_key(UserName=admin_user)["AccessKey"]
        self.enforce_iam()
        return self.admin_keys

    def enforce_iam(self, unauthenticated_requests: int = 0) -> None:
        """moto checks every request after the first N against IAM policies."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=str(unauthenticated_requests).encode(),
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).read()

    def fleet_table(
        self,
        base: Path,
        *,
        table: str,
        name: str,
        event_hooks: list[tuple[str, Any]] | None = None,
        endpoint: str | None = None,
    ) -> Any:
        """A fleet table on the stand-in, created by `fleet init`'s own code, and the
        FleetTable that reaches it as a fleet agent's root would (tests, benchmarks),
        through ``endpoint`` if given (a fault proxy in front of the stand-in).
        The admin's keys stay on this object: a failing call never shows them as an
        argument in a traceback."""
        from dyncreds import config
        from dyncreds.aws.fleet_table import FleetTable, create_table
        from dyncreds.aws.session import AwsSession

        (base / "roles").mkdir(parents=True, exist_ok=True)
        keys = self.admin_keys
        write_credentials_file(
            base / "root.toml", StaticKeys(keys["AccessKeyId"], Secret(keys["SecretAccessKey"]))
        )
        (base / "config.toml").write_text(
            textwrap.dedent(f"""\
            [root]
            credentials_file = "root.toml"
            iam_endpoint = "{self.endpoint}"
            sts_endpoint = "{self.endpoint}"
            [fleet]
            table = "{table}"
            name = "{name}"
            endpoint = "{endpoint or self.endpoint}"
            """)
        )
        cfg = config.load(base)
        assert cfg.main.fleet is not None
        session = AwsSession(cfg, call_timeout=10, concurrency=8, event_hooks=event_hooks)
        create_table(session.dynamodb, table)
        return FleetTable(cfg.main.fleet, lambda: session)

    def reset(self) -> None:
        """A new, empty account with enforcement off (tests call this between runs)."""
        self.enforce_iam(unauthenticated_requests=1_000_000_000)
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def key_rejected(self, access_key_id: str, secret_access_key: str) -> str | None:
        """AWS's error code when these keys are refused, or None if they work."""
        import botocore.exceptions

        sts = self.client(
            "sts", aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key
        )
        try:
            sts.get_caller_identity()
        except botocore.exceptions.ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return None

    def stop(self) -> None:
        self.server.stop()


# --------------------------------------------------------------------------- helpers


def write_config(config_dir: Path, endpoint: str, keys: dict[str, str]) -> None:
    (config_dir / "roles").mkdir(parents=True)
    write_credentials_file(
        config_dir / "root-credentials.toml",
        StaticKeys(keys["AccessKeyId"], Secret(keys["SecretAccessKey"])),
    )
    (config_dir / "config.toml").write_text(
        textwrap.dedent(f"""\
        [agent]
        propagation_checks = 2

        [root]
        credentials_file = "root-credentials.toml"
        region = "us-east-1"
        iam_endpoint = "{endpoint}"
        sts_endpoint = "{endpoint}"
        """)
    )
    (config_dir / "roles" / "ec2-only.toml").write_text(
        textwrap.dedent(f"""\
        credential_type = "iam_user"
        policy_document = '''{json.dumps(EC2_ONLY)}'''
        ttl = "1h"
        max_ttl = "4h"
        iam_tags = {{ purpose = "demo" }}
        region = "us-east-1"
        """)
    )
    (config_dir / "roles" / "deploy.toml").write_text(
        textwrap.dedent(f"""\
        credential_type = "assumed_role"
        role_arns = ["arn:aws:iam::{ACCOUNT}:role/deploy"]
        ttl = "1h"
        region = "us-east-1"
        """)
    )


def agent_env(base: Path, socket_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DYNCREDS_"))}
    env.update(
        {
            "DYNCREDS_CONFIG_DIR": str(base / "config"),
            "DYNCREDS_STATE_DIR": str(base / "state"),
            "DYNCREDS_SOCKET": str(socket_path),
            "AWS_CONFIG_FILE": str(base / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(base / "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


def wait_for_socket(path: Path, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited early with status {process.returncode}")
        try:
            with Client(path, timeout=2) as client:
                if client.call("ping").get("ok"):
                    return
        except (CliError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError("the agent did not start listening in time")


@contextmanager
def running_agent(
    base: Path, env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "dyncreds", "agent"], env=env, stdout=log_file, stderr=log_file
        )
        try:
            wait_for_socket(Path(env["DYNCREDS_SOCKET"]), process, time.monotonic() + 30)
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
