"""``dyncreds demo``: the whole job, offline, explained step by step.

An embedded AWS stand-in (moto's server on loopback, with IAM enforcement on),
a service-account user with administrator rights (the seed's "vaultuser"), a
throw-away configuration with an iam_user role that allows only EC2 and an
assumed_role role, a real agent process, and a real boto3 program that gets its
keys through ``credential_process = dyncreds-shim ROLE``. Then a revoke, and
proof that the old key is dead and the user gone. Nothing is left running.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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

PROGRAM = """
import boto3, botocore.exceptions
session = boto3.Session(profile_name="{profile}")
print("  identity:", session.client("sts").get_caller_identity()["Arn"])
print("  ec2:DescribeInstances ->", len(session.client("ec2").describe_instances()["Reservations"]),
      "reservations (allowed)")
try:
    session.client("s3").list_buckets()
    print("  s3:ListBuckets -> allowed (unexpected!)")
except botocore.exceptions.ClientError as exc:
    print("  s3:ListBuckets ->", exc.response["Error"]["Code"], "(denied by the role's policy)")
"""


IDENTITY = """
import boto3
session = boto3.Session(profile_name="{profile}")
print("  identity:", session.client("sts").get_caller_identity()["Arn"])
"""


# --------------------------------------------------------------------------- the stand-in


class StandIn:
    """moto's server on 127.0.0.1 with IAM enforcement, and an admin client."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise SystemExit(
                "dyncreds demo needs the AWS stand-in: pip install 'dyncreds[demo]'"
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

    def reset(self) -> None:
        """A new, empty account with enforcement off (tests call this between runs)."""
        self.enforce_iam(unauthenticated_requests=1_000_000_000)
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def stop(self) -> None:
        self.server.stop()


# --------------------------------------------------------------------------- helpers


def write_config(config_dir: Path, endpoint: str, keys: dict[str, str]) -> None:
    from dyncreds.aws.session import StaticKeys, write_credentials_file
    from dyncreds.leases import Secret

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
    import socket

    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited early with status {process.returncode}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(path))
                sock.sendall(b'{"op":"ping"}\n')
                if b'"ok":true' in sock.recv(4096):
                    return
        except OSError:
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


def _python(program: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"the boto3 program failed: {result.stderr.strip()[-2000:]}")
    return result.stdout.rstrip()


def say(text: str) -> None:
    print()
    print(textwrap.fill(text, width=88))


def run_cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dyncreds", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dyncreds {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


# --------------------------------------------------------------------------- the walk-through


def main(keep: bool = False) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dyncreds-demo-", dir="/tmp") as tmp:
        base = Path(tmp)
        say("1. Starting an AWS stand-in (moto's server) on 127.0.0.1 - no network needed.")
        aws = StandIn()
        try:
            return _walk(aws, base, started)
        finally:
            aws.stop()


def _walk(aws: StandIn, base: Path, started: float) -> int:
    print(f"   listening on {aws.endpoint}")
    say(
        "2. Creating the service-account user 'vaultuser' with administrator rights (the "
        "agent's root identity, Vault's config/root), a role 'deploy' to assume, and turning "
        "on IAM enforcement so that every call below is checked against real policies."
    )
    keys = aws.bootstrap()
    aws.client("iam").create_role(
        RoleName="deploy", AssumeRolePolicyDocument=json.dumps(TRUST_VAULTUSER)
    )
    print(f"   root key {keys['AccessKeyId']} (its secret stays inside the agent)")

    say(
        "3. Writing a throw-away configuration: root credentials file (mode 0600), an iam_user "
        "role 'ec2-only' whose policy allows only EC2, and an assumed_role role 'deploy'."
    )
    write_config(base / "config", aws.endpoint, keys)
    socket_path = base / "agent.sock"
    env = agent_env(base, socket_path)
    print(run_cli(env, "check").rstrip())

    say("4. Starting the agent on a private socket.")
    with running_agent(base, env, base / "agent.log") as agent:
        print(f"   agent pid {agent.pid}, socket {socket_path}")
        say(
            "5. Pointing ~/.aws/config profiles at dyncreds-shim (a throw-away AWS_CONFIG_FILE "
            "here). `dyncreds aws-config` prints them:"
        )
        profiles = run_cli(env, "aws-config", "ec2-only", "deploy")
        (base / "aws-config").write_text(profiles)
        print(textwrap.indent(profiles.rstrip(), "   "))

        child_env = dict(env, AWS_ENDPOINT_URL=aws.endpoint)
        say(
            "6. A plain boto3 program using profile 'ec2-only'. It knows nothing about dyncreds: "
            "botocore runs the shim, the agent creates a temporary IAM user with the EC2-only "
            "policy, waits until its new key really works, and hands it over."
        )
        t0 = time.monotonic()
        print(_python(PROGRAM.format(profile="ec2-only"), child_env))
        print(f"   (first run, including the issuance: {time.monotonic() - t0:.2f}s)")
        t0 = time.monotonic()
        _python(PROGRAM.format(profile="ec2-only"), child_env)
        print(f"   (second run, served from the agent's cache: {time.monotonic() - t0:.2f}s)")

        say("7. The same for 'deploy': the agent calls sts:AssumeRole.")
        print(_python(IDENTITY.format(profile="deploy"), child_env))

        say("8. `dyncreds status` shows the leases (never a secret):")
        print(textwrap.indent(run_cli(env, "status").rstrip(), "   "))

        from dyncreds.cli import Client

        with Client(socket_path) as client:
            creds = client.request("credentials", role="ec2-only")["credentials"]
        user_keys = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
        }
        users_before = [
            u["UserName"]
            for u in aws.client("iam").list_users()["Users"]
            if u["UserName"] != "vaultuser"
        ]
        say(
            f"9. Revoking the 'ec2-only' lease: keys, policies and the user "
            f"{', '.join(users_before)} are deleted in AWS."
        )
        print(textwrap.indent(run_cli(env, "revoke", "--role", "ec2-only").rstrip(), "   "))
        import botocore.exceptions

        try:
            aws.client("sts", **user_keys).get_caller_identity()
            print("   the old key still works (unexpected!)")
            return 1
        except botocore.exceptions.ClientError as exc:
            print(
                f"   the old key {creds['AccessKeyId']} is now rejected: "
                f"{exc.response['Error']['Code']}"
            )
        users_after = [
            u["UserName"]
            for u in aws.client("iam").list_users()["Users"]
            if u["UserName"] != "vaultuser"
        ]
        print(f"   temporary IAM users left: {users_after or 'none'}")
        if users_after:
            return 1
        say("10. Stopping the agent (SIGTERM: it finishes requests in flight and exits 0).")
    print(f"   agent exited with status {agent.returncode}")
    say(
        f"Done in {time.monotonic() - started:.1f}s. For real use: `dyncreds init`, "
        "`dyncreds configure root`, `dyncreds role create ...`, then the systemd units in "
        "systemd/ (see README)."
    )
    return 0 if agent.returncode == 0 else 1
