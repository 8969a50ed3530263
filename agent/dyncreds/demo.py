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
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from dyncreds.aws.standin import TRUST_VAULTUSER, StandIn, agent_env, running_agent, write_config
from dyncreds.client import EXIT_AGENT_ERROR, EXIT_OK, Client

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


def _python(program: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(f"the boto3 program failed: {result.stderr.strip()[-2000:]}")
    return result.stdout.rstrip()


def say(text: str) -> None:
    print()
    # Never split a user name, an ARN or a command across lines.
    print(textwrap.fill(text, width=88, break_long_words=False, break_on_hyphens=False))


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


def main(keep: bool = False, console: bool = False) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dyncreds-demo-", dir="/tmp") as tmp:
        base = Path(tmp)
        say("1. Starting an AWS stand-in (moto's server) on 127.0.0.1 - no network needed.")
        aws = StandIn()
        try:
            return _walk(aws, base, started, console)
        finally:
            aws.stop()


def _walk(aws: StandIn, base: Path, started: float, console: bool = False) -> int:
    print(f"   listening on {aws.endpoint}")
    env = _set_up(aws, base)
    socket_path = base / "agent.sock"

    say("4. Starting the agent on a private socket.")
    with running_agent(base, env, base / "agent.log") as agent:
        print(f"   agent pid {agent.pid}, socket {socket_path}")
        _use_profiles(aws, base, env)
        say("8. `dyncreds status` shows the leases (never a secret):")
        print(textwrap.indent(run_cli(env, "status").rstrip(), "   "))
        if not _revoke_and_verify(aws, env, socket_path):
            return EXIT_AGENT_ERROR
        if console:
            _console(env)
        say("10. Stopping the agent (SIGTERM: it finishes requests in flight and exits 0).")
    print(f"   agent exited with status {agent.returncode}")
    _closing(started, console)
    return EXIT_OK if agent.returncode == 0 else EXIT_AGENT_ERROR


def _set_up(aws: StandIn, base: Path) -> dict[str, str]:
    """Steps 2-3: the root identity and a role in the stand-in, the throw-away
    configuration (checked); the environment every later command runs in."""
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
    env = agent_env(base, base / "agent.sock")
    print(run_cli(env, "check").rstrip())
    return env


def _use_profiles(aws: StandIn, base: Path, env: dict[str, str]) -> None:
    """Steps 5-7: plain SDK programs that know only an AWS profile get credentials."""
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


def _temporary_users(aws: StandIn) -> list[str]:
    """The IAM users the agent created (every user but the root identity)."""
    return [
        u["UserName"]
        for u in aws.client("iam").list_users()["Users"]
        if u["UserName"] != "vaultuser"
    ]


def _revoke_and_verify(aws: StandIn, env: dict[str, str], socket_path: Path) -> bool:
    """Step 9: revoke the iam_user lease; False if its key still works or its
    user is left in AWS."""
    with Client(socket_path) as client:
        creds = client.request("credentials", role="ec2-only")["credentials"]
    users_before = _temporary_users(aws)
    say(
        f"9. Revoking the 'ec2-only' lease: keys, policies and the user "
        f"{', '.join(users_before)} are deleted in AWS."
    )
    print(textwrap.indent(run_cli(env, "revoke", "--role", "ec2-only").rstrip(), "   "))
    rejected = aws.key_rejected(creds["AccessKeyId"], creds["SecretAccessKey"])
    if rejected is None:
        print("   the old key still works (unexpected!)")
        return False
    print(f"   the old key {creds['AccessKeyId']} is now rejected: {rejected}")
    users_after = _temporary_users(aws)
    print(f"   temporary IAM users left: {users_after or 'none'}")
    return not users_after


def _closing(started: float, console: bool) -> None:
    say(
        f"Done in {time.monotonic() - started:.1f}s. For real use: `dyncreds init`, "
        "`dyncreds configure root`, `dyncreds role create ...`, then `dyncreds install-units` "
        "for the systemd user units (see README)."
    )
    if not console:
        say(
            "The web console on this demo's stand-in and agent: `dyncreds demo --console` "
            "(the same walk, then `dyncreds ui` on them until Ctrl-C)."
        )


def _console(env: dict[str, str]) -> None:
    """``dyncreds ui`` on the demo's agent, until Ctrl-C: it prints its address."""
    say("The web console on this stand-in (Ctrl-C to stop it and finish the demo):")
    ui = subprocess.Popen([sys.executable, "-m", "dyncreds", "ui"], env=env)
    try:
        ui.wait()
    except KeyboardInterrupt:
        ui.terminate()
        ui.wait(timeout=20)
