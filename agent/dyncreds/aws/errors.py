"""AWS's answers as dyncreds errors, in one place (``map_errors``), as httpcore
maps its backends' exceptions: AWS's error code is kept, the message is one line,
and nothing from the request (keys, tokens) is echoed. And the codes that mean
something to the callers: retryable, the root rejected, already gone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import botocore.exceptions
import trio

from dyncreds.aws.attempts import AnswerLost
from dyncreds.protocol import DyncredsError, Unavailable, Upstream

# AWS error codes worth retrying (besides botocore's own standard-mode retries).
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceFailure",
        "IDPCommunicationError",
        "ConnectionError",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
# Codes that mean AWS does not accept the credentials that signed the request.
ROOT_REJECTED_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
    }
)
# Codes that mean "the thing is already gone": success, for a cleanup.
GONE_CODES = frozenset({"NoSuchEntity", "NoSuchEntityException"})


def aws_code(exc: BaseException) -> str | None:
    if isinstance(exc, Upstream):
        return exc.aws_code
    return None


class RootRefreshFailed(Unavailable):
    """The root's own credentials expired and their provider could not renew them."""


@contextmanager
def map_errors(operation: str) -> Iterator[None]:
    """botocore / trio exceptions -> dyncreds errors, in one place."""
    try:
        yield
    except DyncredsError:
        raise
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        message = " ".join(str(error.get("Message") or "").split())[:300]
        raise Upstream(
            f"AWS {operation} failed: {code}" + (f": {message}" if message else ""),
            aws_code=code,
            retryable=code in RETRYABLE_CODES
            or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500,
        ) from None
    except AnswerLost:
        raise Upstream(
            f"AWS {operation} did not answer (it may have been done); not resent",
            aws_code="RequestTimeout",
            retryable=True,
        ) from None
    except trio.TooSlowError:
        raise Upstream(
            f"AWS {operation} did not answer in time", aws_code="RequestTimeout", retryable=True
        ) from None
    except (
        botocore.exceptions.ConnectionError,
        botocore.exceptions.HTTPClientError,
    ) as exc:
        raise Upstream(
            f"AWS {operation} could not be reached: {type(exc).__name__}",
            aws_code="ConnectionError",
            retryable=True,
        ) from None
    except (
        botocore.exceptions.CredentialRetrievalError,
        botocore.exceptions.RefreshWithMFAUnsupportedError,
        botocore.exceptions.PartialCredentialsError,
    ) as exc:
        # A profile root (SSO, credential_process, assumed role) that could not
        # refresh: what its provider said, cut, with what to do.
        said = " ".join(str(exc).split())[:200]
        raise RootRefreshFailed(
            f"the root's credentials could not be refreshed ({said}); fix the root profile "
            "(e.g. `aws sso login`) - the agent picks it up without a restart"
        ) from None
    except botocore.exceptions.NoCredentialsError:
        raise Unavailable("the root AWS credentials are missing or unusable") from None
    except botocore.exceptions.ProfileNotFound as exc:
        raise Unavailable(f"root profile not found: {exc.kwargs.get('profile')}") from None
    except botocore.exceptions.ParamValidationError as exc:
        raise Upstream(
            f"AWS {operation} rejected the request: {' '.join(str(exc).split())[:300]}",
            aws_code="ValidationError",
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise Upstream(
            f"AWS {operation} failed: {type(exc).__name__}", aws_code=type(exc).__name__
        ) from None
