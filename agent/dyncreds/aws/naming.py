"""Names AWS will accept, made from the username template. Pure.

IAM user names are at most 64 characters, federation token names at most 32,
role session names and source identities at most 64, all from ``[\\w+=,.@-]``. A template that
renders too long is cut in its variable parts (user, then role, then random),
never turned into an error at issue time: Vault fails the issuance instead,
which users rightly find surprising.
"""

from __future__ import annotations

import re
import secrets

_INVALID = re.compile(r"[^\w+=,.@-]", re.ASCII)

USER_NAME_MAX = 64
FEDERATION_NAME_MAX = 32
SESSION_NAME_MAX = 64
SOURCE_IDENTITY_MAX = 64
MIN_RANDOM = 4


def clean(value: str) -> str:
    return _INVALID.sub("_", value)


def render(
    template: str,
    *,
    user: str,
    role: str,
    unix_time: int,
    limit: int,
    random: str | None = None,
    host: str = "",
) -> str:
    values = {
        "user": clean(user) or "user",
        "role": clean(role),
        "host": clean(host) or "host",
        "unix_time": str(unix_time),
        "random": random if random is not None else secrets.token_hex(5),
    }

    def fill() -> str:
        return clean(template.format(**values))

    name = fill()
    # Shrink the longest variable part first; keep at least one character of
    # user and role and MIN_RANDOM of random, which keeps names unique.
    while len(name) > limit:
        shrinkable = [
            key
            for key in ("user", "host", "role", "random")
            if len(values[key]) > (MIN_RANDOM if key == "random" else 1)
            and "{" + key + "}" in template
        ]
        if not shrinkable:
            break
        longest = max(shrinkable, key=lambda key: len(values[key]))
        excess = len(name) - limit
        keep = max(len(values[longest]) - excess, MIN_RANDOM if longest == "random" else 1)
        values[longest] = values[longest][:keep]
        name = fill()
    return name[:limit]
