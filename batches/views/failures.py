"""The one edge where the web side's failures (`batches.errors.Failure`) reach people.

A view wraps the call that may fail (a service, an upstream call) in `shown(request, said)`:
a Failure becomes an error message, `said` followed by the failure's own sentence ("The batch
was not cancelled. The OpenAI API is not available right now."), and the view goes on to the
page it returns to either way. Views catch nothing themselves but a form's, which says the
failure on the form instead (`create.py`, `signin.py`), with `sentence` and `status`. Anything
that is not a Failure is a bug and stays a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.contrib import messages
from django.http import HttpRequest

from ..errors import Failure, ServiceError
from ..openai_client import InvalidRequest, NotFound


@dataclass
class Outcome:
    """What `shown` saw: the failure, if there was one (to record it, or to choose a page)."""

    failure: Failure | None = None

    def __bool__(self) -> bool:
        """True when what was asked for was done."""
        return self.failure is None


@contextmanager
def shown(request: HttpRequest, said: str = "") -> Iterator[Outcome]:
    """Run the block; a Failure in it is shown to the person as an error message and ends
    the block, which is all it does. Any other exception goes on up."""
    outcome = Outcome()
    try:
        yield outcome
    except Failure as failure:
        outcome.failure = failure
        messages.error(request, sentence(failure, said))


def sentence(failure: Failure, said: str = "") -> str:
    """What the person is told: what was not done, then why."""
    return f"{said} {failure}".strip()


def status(failure: Failure) -> int:
    """The status of a page that says FAILURE: 400 for the person's own mistake (a refused
    value, a file id upstream does not know, a service's refusal), 502 for upstream trouble."""
    return 400 if isinstance(failure, InvalidRequest | NotFound | ServiceError) else 502
