"""The web side's one error family.

`Failure` is something a person asked for that could not be done, with `str()` a sentence fit
to show them: never a key, a traceback or a raw upstream body. The client's errors
(`openai_client.OpenAIError`) and the services' refusals (`services.ServiceError`, a refused
email link, a refused company sign-in) are all Failures.

A view lets a Failure rise; it reaches the person at one edge, `views/failures.py`, as a
message on the page they return to. Forms are the one other place: a failure caused by what was
typed is said on the form, beside it. Anything that is not a Failure is a bug and stays a 500.
The `/v1/` API has its own family and edge (`api/errors.py`).
"""

from __future__ import annotations


class Failure(Exception):
    """What a person asked for could not be done; `str()` says why, for them."""


class ServiceError(Failure):
    """A service refused to act (the request itself was the problem, not upstream)."""
