"""Schemathesis hooks for tests/openapi.rs: a check that no answer shows a
secret the test planted (admin and producer tokens, a client secret, a
subscription's signing secret and receiver password), whatever the request.
The values come in POSTLINE_FUZZ_SECRETS, comma-separated."""

import os

import schemathesis

SECRETS = [s for s in os.environ.get("POSTLINE_FUZZ_SECRETS", "").split(",") if s]


@schemathesis.check
def no_secret_leaked(ctx, response, case):
    """Fail when a planted secret appears in a response's body or headers."""
    text = response.text or ""
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
    for secret in SECRETS:
        if secret in text or secret in headers:
            raise AssertionError("a planted secret appears in the response")
