"""The host's other door: a root that is the EC2 instance role is reachable by
every local user through the instance metadata service (IMDS), around the agent
and its [[access]] rules, unless the host stops them. dyncreds ships the rule
that does (``share/nftables/dyncreds-imds.nft``: only the service user reaches
IMDS); ``check`` and ``status`` say when the root is, or may be, the instance
role and that rule is not loaded.

Whether the rule is loaded is asked of nft itself, which needs root: run as
another user, the answer is "unknown" and nothing is said.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from typing import Any

TABLE = ("inet", "dyncreds_imds")
# An instance profile's session is named after the instance. (Compiled on first use,
# by re's cache: `status` of a user's agent never needs it.)
INSTANCE_ROLE = r":assumed-role/[^/]+/i-[0-9a-f]{8,17}$"
RULE = "/etc/nftables.d/dyncreds-imds.nft"


def guard_loaded() -> bool | None:
    """Is the IMDS rule loaded? None: cannot tell (no nft, or not root)."""
    import shutil  # only when asked: `status` runs this module on every call
    import subprocess

    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft is None:
        return None
    try:
        result = subprocess.run(
            [nft, "list", "table", *TABLE], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode == 0:
        return True
    return False if "No such file or directory" in result.stderr else None


def warning(root: str) -> str | None:
    """``root``: what the root is ("instance role", "may be the instance role").
    The warning to show, if that rule is missing."""
    if guard_loaded() is not False:
        return None
    return (
        f"the root is {root}, and every local user can take it from IMDS around the "
        f"agent's rules: load the rule that lets only the service user reach it "
        f"(`nft -f {RULE}`, written by `dyncreds install-units --system`)"
    )


def status_warning(status: dict[str, Any]) -> str | None:
    """For ``status``: a system agent whose root identity is an instance profile."""
    arn = str((status.get("root") or {}).get("arn") or "")
    if status.get("agent", {}).get("mode") != "system" or not re.search(INSTANCE_ROLE, arn):
        return None
    return warning("this instance's role")


def check_warning(mode: str, source: str) -> str | None:
    """For ``check`` (offline): a system agent on boto3's default chain, which on
    EC2 ends at the instance role."""
    if mode != "system" or source != "default chain":
        return None
    return warning("boto3's default chain (on EC2: this instance's role)")
