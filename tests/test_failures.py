"""The web side's one error family (`batches.errors.Failure`) and its one edge
(`batches/views/failures.py`); and services imported one way.

The source tests walk every view module, command and API module, so a new one is covered
without editing them.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import RequestFactory

import api.services as api_services
from batches import errors, openai_client, services
from batches.errors import Failure, ServiceError
from batches.services import addresses, result_files, signin, submissions
from batches.services.connections import ConnectionNotReady
from batches.views import failures

ROOT = Path(__file__).resolve().parent.parent

# The modules where a form says a failure beside the form (house style): the only views that
# may name the family in an `except`.
FORM_VIEWS = {"create.py", "signin.py"}


def _request():
    request = RequestFactory().post("/")
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


# --- The family ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family",
    [
        openai_client.OpenAIError,
        openai_client.UpstreamUnavailable,
        openai_client.InvalidId,
        ConnectionNotReady,
        ServiceError,
        result_files.FileGone,
        submissions.SubmissionTokenTaken,
        submissions.StagingQuotaExceeded,
        addresses.AddressLinkRefused,
        signin.SignInRefused,
    ],
)
def test_every_refusal_a_person_meets_is_a_failure(family):
    assert issubclass(family, Failure)


def test_already_submitted_is_not_a_failure_but_a_way_to_the_batch():
    assert not issubclass(submissions.AlreadySubmitted, Failure)


# --- The edge --------------------------------------------------------------------------------


def test_a_failure_is_said_after_what_was_not_done_and_the_view_goes_on():
    request = _request()
    reached = []
    with failures.shown(request, "The batch was not cancelled.") as outcome:
        raise openai_client.UpstreamUnavailable("connection refused")
    reached.append("after")

    assert not outcome
    assert isinstance(outcome.failure, openai_client.UpstreamUnavailable)
    assert reached == ["after"]
    [message] = list(get_messages(request))
    assert message.level_tag == "error"
    assert str(message) == (
        "The batch was not cancelled. The OpenAI API is not available right now: "
        "connection refused."
    )


def test_a_block_that_succeeds_says_nothing():
    request = _request()
    with failures.shown(request, "Never said.") as outcome:
        pass
    assert outcome
    assert list(get_messages(request)) == []


def test_a_bug_is_not_a_failure_and_goes_on_up():
    request = _request()
    with pytest.raises(KeyError), failures.shown(request, "Not said."):
        raise KeyError("a bug")
    assert list(get_messages(request)) == []


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (ServiceError("The file is too large."), 400),
        (openai_client.InvalidRequest("bad value"), 400),
        (openai_client.NotFound("no such file"), 400),
        (openai_client.UpstreamUnavailable("timed out"), 502),
        (openai_client.RateLimited("slow down", status=429), 502),
    ],
)
def test_a_form_page_that_says_a_failure_has_the_status_of_whose_it_was(failure, status):
    assert failures.status(failure) == status


# --- Views catch nothing but through the edge ------------------------------------------------


def _family_names() -> set[str]:
    """Every name of the family a view could write in an `except`."""
    modules = [errors, openai_client, result_files, submissions, addresses, signin]
    names = {"Failure"}
    for module in modules:
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, Failure):
                names.add(name)
    return names


def _caught(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            for part in ast.walk(node.type):
                if isinstance(part, ast.Name):
                    names.add(part.id)
                elif isinstance(part, ast.Attribute):
                    names.add(part.attr)
    return names


def test_no_view_catches_a_failure_itself():
    """A view that calls a service wraps it in `failures.shown`; only a form says a failure
    on itself. Anything else caught by hand is a second edge."""
    family = _family_names()
    views = ROOT / "batches" / "views"
    offenders = {}
    for path in sorted(views.glob("*.py")):
        if path.name in FORM_VIEWS | {"failures.py"}:
            continue
        caught = _caught(ast.parse(path.read_text())) & family
        if caught:
            offenders[path.name] = sorted(caught)
    assert offenders == {}


# --- Services imported one way ---------------------------------------------------------------


SERVICE_MODULES = {
    m.name for package in (services, api_services) for m in pkgutil.iter_modules(package.__path__)
}


def _callers() -> list[Path]:
    """Every module that calls services from outside them: views, commands, the API's views,
    the admin, the caches, the apps' start-up."""
    found = []
    for app in ("batches", "api"):
        for path in sorted((ROOT / app).rglob("*.py")):
            parts = path.relative_to(ROOT / app).parts
            if parts[0] in {"services", "migrations"}:
                continue
            found.append(path)
    return found


def test_callers_import_service_modules_never_names_out_of_them():
    offenders = []
    for path in _callers():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            module, parts = node.module, node.module.split(".")
            if parts[-1] == "services":
                wrong = [a.name for a in node.names if a.name not in SERVICE_MODULES]
            elif parts[-2:-1] == ["services"]:
                wrong = [a.name for a in node.names]
            else:
                continue
            if wrong:
                offenders.append(f"{path.relative_to(ROOT)}: {module} import {', '.join(wrong)}")
    assert offenders == []


def test_the_services_package_exports_no_names_of_its_own():
    """One way in: `services.X` is always a module."""
    own = [
        name
        for name, value in vars(services).items()
        if not name.startswith("__") and not isinstance(value, type(services))
    ]
    assert own == []
