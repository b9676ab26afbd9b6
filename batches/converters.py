"""The strict path converters: every id a URL carries is matched here, before any view runs.

`upstream_id` (a batch or file id of the connection's upstream) takes the client's one pattern,
UPSTREAM_ID_REGEX: a path such as `/v1/files/..` or `/connections/x/batches/./` is a 404 of the
URL resolver, and batches/openai_client.py refuses the same ids again for callers whose ids come
from anywhere else. `submission_token` takes the shape of a server-made submission token;
`page_rest` the rest of a legacy batch link, which the redirect appends to the batch's URL;
`signed_token` a token made by django.core.signing (the address confirmation link).

tests/test_upstream_ids.py walks the whole URLconf: a path parameter named `*_id`, `openai_id`
or `token` must use one of STRICT, so a new route cannot take `<str:...>` for an id by mistake.
"""

from __future__ import annotations

import re

from django.urls import register_converter

from .openai_client import UPSTREAM_ID_REGEX

# `secrets.token_urlsafe(18)` makes 24 of these; API-made submissions add an `api-` prefix.
SUBMISSION_TOKEN_REGEX = r"[A-Za-z0-9_-]{1,64}"  # noqa: S105 (a pattern, not a secret)


class _Strict:
    regex = ""

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: object) -> str:
        # Never make a link that the same pattern would refuse.
        text = str(value)
        if not re.fullmatch(self.regex, text):
            raise ValueError(f"not a {type(self).__name__} value")
        return text


class UpstreamIdConverter(_Strict):
    regex = UPSTREAM_ID_REGEX


class SubmissionTokenConverter(_Strict):
    regex = SUBMISSION_TOKEN_REGEX


class PageRestConverter(_Strict):
    """The rest of a legacy /batches/<id>/... link (`results/`, `results/5/`, `results.csv`):
    plain segments, the last one perhaps with an extension, never a `.` or `..` segment."""

    regex = r"(?:[A-Za-z0-9_-]+/)*(?:[A-Za-z0-9_-]+(?:\.[a-z]{1,8})?)?"


class SignedTokenConverter(_Strict):
    """A token made by django.core.signing's TimestampSigner.sign_object (the address
    confirmation link): `[.]payload:timestamp:signature`, each part base64url."""

    regex = r"\.?[A-Za-z0-9_-]{1,1024}:[A-Za-z0-9_-]{1,16}:[A-Za-z0-9_-]{1,128}"


STRICT: dict[str, type[_Strict]] = {
    "upstream_id": UpstreamIdConverter,
    "submission_token": SubmissionTokenConverter,
    "page_rest": PageRestConverter,
    "signed_token": SignedTokenConverter,
}

for _name, _converter in STRICT.items():
    register_converter(_converter, _name)
