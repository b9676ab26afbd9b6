"""Personal API tokens on the profile page: make one (shown once), revoke one."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from batches import roles
from batches.views.access import rule

from .models import ApiToken, Scope
from .services import tokens


class _Once(str):
    """The new token, for its page. Django's template engine logs the whole context (its repr)
    at DEBUG when a lookup fails, so the repr must not hold the token."""

    def __repr__(self) -> str:
        return "'<the new token, not logged>'"


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What the token is for, e.g. “nightly eval script”.",
    )
    scope = forms.ChoiceField(choices=Scope.choices, initial=Scope.READ)
    days = forms.TypedChoiceField(
        label="Expires after",
        choices=[(d, f"{d} days") for d in tokens.EXPIRY_DAYS],
        coerce=int,
        initial=90,
    )

    def __init__(self, *args, user=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if user is not None and not user.has_perm(roles.SUBMIT):
            # A submit token is of no use without the role: don't offer it.
            self.fields["scope"].choices = [(Scope.READ, Scope.READ.label)]


@rule(roles.VIEW)
@require_POST
@never_cache
def token_create(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST, user=request.user)
    if not form.is_valid():
        messages.error(request, "No token was made: give it a name, a scope and an expiry.")
        return redirect("profile")
    made = tokens.token_create(user=request.user, **form.cleaned_data)
    # Shown in this answer and nowhere else: not stored, not put in a message or the session.
    context = {"token": made.token, "plain": _Once(made.plain)}
    response = render(request, "api/token_created.html", context)
    response["Cache-Control"] = "no-store"
    return response


@rule()
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = ApiToken.objects.filter(pk=token_id, user=request.user).first()
    if token is None:  # someone else's token, or none: the same answer
        raise Http404("No such token.")
    if tokens.token_revoke(token=token, by=request.user):
        messages.success(request, f"The token “{token.name}” is revoked: it no longer works.")
    else:
        messages.info(request, f"The token “{token.name}” was revoked already.")
    return redirect("profile")
