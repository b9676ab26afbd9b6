"""The sign-in page (password form and the company sign-in button), company sign-in's two steps
(off to the provider, and back), sign-out, and the page a locked-out sign-in gets."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from mozilla_django_oidc.views import OIDCAuthenticationRequestView

from ..models import Event
from ..services import signin

log = logging.getLogger(__name__)

ID_TOKEN = "oidc_id_token"  # noqa: S105 - the session key, not a token


def _sign_in_context(request: HttpRequest) -> dict[str, Any]:
    return {
        "oidc_enabled": signin.oidc_enabled(),
        "provider_name": signin.provider_name(),
        "password_signin": settings.BATCHWEB_PASSWORD_SIGNIN,
    }


class SignInView(auth_views.LoginView):
    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), **_sign_in_context(self.request)}


sign_in = SignInView.as_view()


def locked_out(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the sign-in page again, saying when to try again (HTTP 429)."""
    username = (credentials or {}).get(settings.AXES_USERNAME_FORM_FIELD) or ""
    until = signin.locked_until(request, username)
    seconds_left = max(1, int((until - timezone.now()).total_seconds())) if until else 0
    next_url = request.POST.get("next", "")
    safe_next = url_has_allowed_host_and_scheme(next_url, {request.get_host()})
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "next": next_url if safe_next else "",
        "locked_until": until,
        "locked_minutes": max(1, round(seconds_left / 60)),
        **_sign_in_context(request),
    }
    response = render(request, "registration/login.html", context, status=429)
    if until:
        response["Retry-After"] = str(seconds_left)
    return response


def _refused(request: HttpRequest, refused: signin.SignInRefused) -> HttpResponse:
    address = signin.client_address(request)
    log.warning("Company sign-in refused from %s: %s", address, refused.detail)
    Event.record(
        Event.Action.SIGN_IN_FAILED,
        username=refused.username,
        detail=f"with {signin.provider_name()}: {refused.detail}; from {address}",
    )
    messages.error(request, str(refused))
    return redirect("login")


class CompanySignInStart(OIDCAuthenticationRequestView):
    """Off to the provider: state, nonce and PKCE pair kept in the session (the library's)."""

    def __init__(self, **kwargs: Any) -> None:
        super(OIDCAuthenticationRequestView, self).__init__(**kwargs)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID

    def get(self, request: HttpRequest) -> HttpResponse:
        if not signin.oidc_enabled():
            raise Http404("Company sign-in is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = signin.provider_metadata()["authorization_endpoint"]
        except signin.ProviderUnavailable as refused:
            return _refused(request, refused)
        return super().get(request)


company_sign_in = CompanySignInStart.as_view()


@require_GET
def company_callback(request: HttpRequest) -> HttpResponse:
    """Back from the provider: the code is exchanged, the ID token checked, the account found
    or made and its groups mapped; any failure is said on the sign-in page and audited."""
    if not signin.oidc_enabled():
        raise Http404("Company sign-in is not configured.")
    states = request.session.get("oidc_states") or {}
    pending = states.pop(request.GET.get("state", ""), None)  # each state is used once
    request.session["oidc_states"] = states
    name = signin.provider_name()
    if request.GET.get("error"):
        said = request.GET.get("error_description") or request.GET["error"]
        return _refused(
            request,
            signin.SignInRefused(
                f"{name} did not sign you in ({said[:200]}).",
                detail=f"the provider answered {request.GET['error'][:100]}",
            ),
        )
    if pending is None or not request.GET.get("code"):
        return _refused(
            request,
            signin.SignInRefused(
                "That sign-in link has expired or was already used. Start again.",
                detail="unknown or reused state",
            ),
        )
    backend = signin.CompanyBackend()
    try:
        user = backend.authenticate(
            request, nonce=pending["nonce"], code_verifier=pending.get("code_verifier")
        )
    except signin.SignInRefused as refused:
        return _refused(request, refused)
    next_url = request.session.pop("oidc_login_next", None) or resolve_url(
        settings.LOGIN_REDIRECT_URL
    )
    request.bw_sign_in_note = f"with {name}; groups: {', '.join(backend.roles) or 'none'}"
    auth.login(request, user, backend=signin.COMPANY_BACKEND)
    request.session[ID_TOKEN] = backend.id_token
    return HttpResponseRedirect(next_url)


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    """Sign out here, and at the provider too when the session came from it (the browser goes
    to its end_session_endpoint, which sends it back to the sign-in page)."""
    at_provider = signin.sign_out_url(
        id_token=request.session.get(ID_TOKEN, ""),
        back_to=request.build_absolute_uri(reverse("login")),
    )
    auth.logout(request)
    if at_provider:
        return HttpResponseRedirect(at_provider)
    return redirect(settings.LOGOUT_REDIRECT_URL)
