"""Who may use which page: each view states its rule once, with `@rule(...)`.

A person who is not signed in goes to the sign-in page; one whose role lacks the permission
gets the 403 page saying which role it takes. Objects are then looked up through
`lookups.batch_for`, so ids never reach what a person may not see (404).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from .. import roles

# What each permission takes, in words for the 403 page.
NEEDS = {
    roles.VIEW: "a role (Viewers or above)",
    roles.SUBMIT: "the Submitters role or above",
    roles.CANCEL_OWN: "the Submitters role (your own batches) or Operators (any batch)",
    roles.SYNC: "the Operators role",
    roles.LABELS: "the Operators role",
    roles.MANAGE_CONNECTIONS: "the Admins role",
}

View = Callable[..., HttpResponse]


def rule(*permissions: str) -> Callable[[View], View]:
    """Sign-in, then any one of `permissions` (none: being signed in is enough)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if permissions and not any(request.user.has_perm(p) for p in permissions):
                raise PermissionDenied(f"This takes {NEEDS.get(permissions[0], 'another role')}.")
            return view(request, *args, **kwargs)

        checked.permissions = permissions  # read by the access tests
        return login_required(checked)

    return decorate
