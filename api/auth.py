"""Who is calling the API and on which connection: each view states its rule once, with
`@token_rule(...)`, as the pages do with `@rule(...)`.

Only a personal token opens /v1/: a browser's session cookie is ignored there (and so CSRF,
which protects cookie-authenticated changes, does not apply). The token's owner becomes
`request.user` for the request, so every service records and checks them as if they had used
the pages; audit entries written meanwhile say which token was used. A call without a token of
ours is refused without an audit entry (it could come from anyone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from batches import roles
from batches.errors import ServiceError
from batches.models import DEFAULT_SLUG, Connection, Event
from batches.models.audit import audit_via
from batches.openai_client import OpenAIError

from .errors import ApiError, upstream_error
from .models import CONNECTION_HEADER, ApiToken, Scope
from .services import tokens

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponse]

NEEDS = {
    roles.VIEW: "a role (Viewers or above)",
    roles.SUBMIT: "the Submitters role or above",
}


def token_rule(*permissions: str, scope: str = Scope.READ) -> Callable[[View], View]:
    """A valid token, of `scope` (submit is needed for changes), whose owner holds any one of
    `permissions`, and the connection the request names (or the default one)."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                token = _authenticate(request)
                with audit_via(f"API token “{token.name}” ({token.display_prefix})"):
                    try:
                        _check(request, token, permissions, scope)
                        return view(request, *args, **kwargs)
                    except ApiError as error:
                        if error.audit:
                            _audit_refusal(request, error, token=token)
                        return error.response()
                    except OpenAIError as error:
                        # The services have written the failure to the audit trail already.
                        return upstream_error(error).response()
                    except ServiceError as error:
                        refusal = ApiError(400, str(error), code="invalid_request")
                        _audit_refusal(request, refusal, token=token)
                        return refusal.response()
            except ApiError as error:  # the token itself was refused
                _refused_token(request, error)
                return error.response()

        checked.permissions = permissions  # read by the access tests, as for @rule
        checked.token_auth = True
        checked.scope = scope
        return checked

    return decorate


def _authenticate(request: HttpRequest) -> ApiToken:
    try:
        token = tokens.token_authenticate(request.headers.get("Authorization"))
    except tokens.TokenRefused as refused:
        error = ApiError(401, refused.message, code=refused.code)
        error.token = refused.token
        raise error from None
    # The token's owner, not whoever a session cookie names.
    request.user = token.user
    request.api_token = token
    return token


def _check(request: HttpRequest, token: ApiToken, permissions: tuple[str, ...], scope: str) -> None:
    user = token.user
    if scope == Scope.SUBMIT and not token.may_submit:
        raise ApiError(
            403,
            f"This token's scope is read; {request.method} {request.path} needs a token with the "
            "submit scope (create one on your profile page).",
            code="insufficient_scope",
        )
    if permissions and not any(user.has_perm(p) for p in permissions):
        raise ApiError(
            403,
            f"This takes {NEEDS.get(permissions[0], 'another role')}; "
            f"{user.get_username()} does not have it.",
            code="insufficient_role",
        )
    slug = (request.headers.get(CONNECTION_HEADER) or "").strip()
    request.connection = _named(user, slug) if slug else _default(user)


def _named(user: Any, slug: str) -> Connection:
    """The connection the request names, among those `Connection.objects.visible_to` gives
    the token's owner; one they may not see is refused as one that does not exist."""
    found = Connection.objects.visible_to(user).get(slug)
    if found is None:
        raise ApiError(
            403,
            f"You may not use a connection “{slug[:50]}” (or there is none by that name).",
            code="connection_forbidden",
            param=CONNECTION_HEADER,
        )
    if not found.enabled:
        raise ApiError(
            403,
            f"The connection “{found.slug}” is disabled.",
            code="connection_disabled",
            param=CONNECTION_HEADER,
        )
    return found


def _default(user: Any) -> Connection:
    """No header: the connection called `default` when the person may use it, else the only
    one they may use (`Connection.objects.listed_to(user, usable=True)`)."""
    usable = Connection.objects.listed_to(user, usable=True)
    default = next((c for c in usable if c.slug == DEFAULT_SLUG), None)
    if default is not None:
        return default
    if len(usable) == 1:
        return usable[0]
    if not usable:
        raise ApiError(
            403, "There is no connection you may use.", code="connection_forbidden", param=None
        )
    slugs = ", ".join(c.slug for c in usable)
    raise ApiError(
        400,
        f"Name the connection with the {CONNECTION_HEADER} header: one of {slugs}.",
        code="connection_required",
        param=CONNECTION_HEADER,
    )


def _refused_token(request: HttpRequest, error: ApiError) -> None:
    """A token refused: in the trail when it is one of ours (expired, revoked, its account
    disabled: the entry names its owner). A missing or made-up token is anyone's, so it is only
    logged: a stranger's calls write nothing durable and leave the page cache alone (issue 19)."""
    token = getattr(error, "token", None)
    if token is not None:
        _audit_refusal(request, error, token=token)
        return
    logger.warning(
        "API call refused, no token of ours: %s %r: %s",
        request.method,
        request.path[:200],
        error.code,
    )


def _audit_refusal(request: HttpRequest, error: ApiError, *, token: ApiToken | None) -> None:
    """A refusal in the trail: who (when the token was known), what was asked, and why. The
    token itself is never written; its prefix is enough to tell which one."""
    connection = getattr(request, "connection", None)
    Event.record(
        Event.Action.API_REFUSED,
        user=token.user if token else None,
        username="" if token else "(unknown token)",
        connection=connection if isinstance(connection, Connection) else None,
        target=f"{request.method} {request.path}"[:255],
        detail=f"HTTP {error.status} {error.code or ''}: {error.message}",
    )
