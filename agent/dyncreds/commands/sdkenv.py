"""What a program under ``exec`` (or a shell that sourced ``serve``'s lines) sees of
AWS: the endpoint, and no other identity, whatever the user's shared files hold.

Every SDK looks at the environment and the shared files (``~/.aws/credentials``,
``~/.aws/config``) *before* the container provider, so a ``[default]`` profile with
static keys used to win over the endpoint. The child therefore gets:

- no credential variable of any SDK (``IDENTITY_VARIABLES``: the usual ones, the
  Java SDK v1's ``AWS_ACCESS_KEY``/``AWS_SECRET_KEY``, profiles, web identity);
- ``AWS_SHARED_CREDENTIALS_FILE`` naming an empty file;
- ``AWS_CONFIG_FILE`` naming a copy of the user's config with every key that can
  produce credentials removed from every profile (``CREDENTIAL_KEYS``), so region,
  retries, endpoints and the rest still work.

Both files live in the endpoint's private directory and go with it.
"""

from __future__ import annotations

import os
from pathlib import Path

IDENTITY_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_ACCESS_KEY",  # the Java SDK v1's names
    "AWS_SECRET_KEY",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CREDENTIAL_PROFILES_FILE",  # the Java SDK's name for the same file
    "AWS_CONFIG_FILE",
)

# Keys of a config-file profile that produce credentials (or point at what does).
CREDENTIAL_KEYS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_security_token",
        "aws_credential_expiration",
        "credential_process",
        "credential_source",
        "source_profile",
        "role_arn",
        "web_identity_token_file",
        "sso_session",
        "sso_start_url",
        "sso_account_id",
        "sso_role_name",
        "login_session",
    }
)


def without_credentials(text: str) -> str:
    """An AWS config file's text with every credential key (and its indented
    continuation lines) removed from every section; everything else kept as is."""
    kept: list[str] = []
    dropping = False
    for line in text.splitlines(keepends=True):
        indented = line[:1] in (" ", "\t")
        if indented and dropping:
            continue  # a nested value of a dropped key
        dropping = False
        stripped = line.strip()
        if not indented and "=" in stripped and not stripped.startswith(("#", ";", "[")):
            key = stripped.split("=", 1)[0].strip().lower()
            if key in CREDENTIAL_KEYS:
                dropping = True
                continue
        kept.append(line)
    return "".join(kept)


def user_config_path(environ: dict[str, str] | os._Environ[str]) -> Path:
    return Path(environ.get("AWS_CONFIG_FILE") or Path.home() / ".aws" / "config").expanduser()


def private_files(directory: Path, environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """Write the empty credentials file and the config copy into ``directory``
    (private, 0700); the variables that name them."""
    credentials = directory / "credentials"
    config = directory / "config"
    try:
        text = user_config_path(environ).read_text(errors="replace")
    except OSError:
        text = ""  # none, or unreadable: an empty config
    for path, content in ((credentials, ""), (config, without_credentials(text))):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(content)
    return {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_CONFIG_FILE": str(config)}


def child_env(
    environ: dict[str, str] | os._Environ[str], directory: Path, endpoint: dict[str, str]
) -> dict[str, str]:
    """The environment of a program served by an endpoint: the caller's, minus every
    identity, plus the private files and ``endpoint``'s variables."""
    env = {k: v for k, v in environ.items() if k not in IDENTITY_VARIABLES}
    env.update(private_files(directory, environ))
    env.update(endpoint)
    return env
