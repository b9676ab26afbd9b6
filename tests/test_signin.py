"""Company sign-in (OpenID Connect): the role map, the flow through the two views against a
faked provider (discovery document, token endpoint, keys, userinfo), every refusal, sign-out.
The same flow runs against a real provider in a browser in tests/e2e/test_oidc.py."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from batches.models import AccountEmail, CompanyIdentity, Event
from batches.services import addresses, signin

ISSUER = "https://idp.example.test/realms/acme"
CLIENT_ID = "batchweb"
CALLBACK = reverse("oidc-callback")
LOGIN = reverse("login")


def _key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY, OTHER_KEY = _key(), _key()
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/auth",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/certs",
    "userinfo_endpoint": f"{ISSUER}/userinfo",
    "end_session_endpoint": f"{ISSUER}/logout",
}


class Provider:
    """The provider, faked with `responses`: what batchweb fetches, and ID tokens to hand out."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.mock = mock
        self.discovery = mock.get(f"{ISSUER}/.well-known/openid-configuration", json=DISCOVERY)
        public = jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
        mock.get(f"{ISSUER}/certs", json={"keys": [{**public, "kid": "k1", "alg": "RS256"}]})
        self.token_requests: list[dict[str, list[str]]] = []

    def start(self, client: Any, next_url: str = "") -> dict[str, str]:
        """Press the button; return the authorization request's parameters."""
        url = reverse("oidc-sign-in") + (f"?next={next_url}" if next_url else "")
        response = client.get(url)
        assert response.status_code == 302, response
        location = urlparse(response["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == f"{ISSUER}/auth"
        return {k: v[0] for k, v in parse_qs(location.query).items()}

    def id_token(self, nonce: str, *, key: Any = KEY, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "u-1", "iat": now, "exp": now + 300}
        payload.update(nonce=nonce, **claims)
        return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})

    def answer(self, id_token: str, userinfo: dict[str, Any]) -> None:
        """The token endpoint's and userinfo endpoint's next answers."""

        def token(request: Any) -> tuple[int, dict[str, str], str]:
            self.token_requests.append(parse_qs(request.body))
            body = f'{{"access_token": "at-1", "token_type": "Bearer", "id_token": "{id_token}"}}'
            return 200, {"Content-Type": "application/json"}, body

        self.mock.add_callback(responses.POST, f"{ISSUER}/token", callback=token)
        self.mock.get(f"{ISSUER}/userinfo", json=userinfo)

    def sign_in(
        self,
        client: Any,
        *,
        groups: Any = ("batch-ops",),
        key: Any = KEY,
        email: str = "ana@example.com",
        username: str = "ana",
        **claims: Any,
    ) -> Any:
        """The whole flow; returns the callback's response. CLAIMS go in the ID token (`sub`
        in the userinfo answer too)."""
        params = self.start(client)
        info = {"sub": claims.get("sub", "u-1"), "email": email, "preferred_username": username}
        if groups is not None:
            info["groups"] = list(groups)
        self.answer(self.id_token(params["nonce"], key=key, **claims), info)
        return client.get(CALLBACK, {"code": "code-1", "state": params["state"]})


@pytest.fixture
def provider(settings, db, no_network) -> Provider:
    settings.OIDC_ISSUER_URL = ISSUER
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = "secret-1"
    settings.OIDC_PROVIDER_NAME = "Acme SSO"
    settings.OIDC_ROLE_MAP = "batch-admins=Admins,batch-ops=Operators,batch-eu=EU team"
    signin.forget_provider_metadata()
    yield Provider(no_network)
    signin.forget_provider_metadata()


def signed_in_as(client: Any) -> str | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id).username if user_id else None


def trusted(user: User, source: str = "admin") -> User:
    """USER, whose address an admin set (or the provider gave, or a mailed link verified)."""
    addresses.email_set(user=user, address=user.email, source=source)
    return user


def refusal(client: Any, response: Any) -> str:
    """The message the sign-in page shows after a refused sign-in."""
    assert response.status_code == 302 and response["Location"] == LOGIN
    return client.get(LOGIN).content.decode()


# --- The role map -------------------------------------------------------------------------------


def test_the_role_map_reads_pairs_and_says_what_is_wrong():
    assert signin.parse_role_map(" batch-admins=Admins, batch-ops = Operators,,x=Viewers,x=EU") == {
        "batch-admins": {"Admins"},
        "batch-ops": {"Operators"},
        "x": {"Viewers", "EU"},
    }
    assert signin.parse_role_map("") == {}
    with pytest.raises(ValueError, match="'batch-admins' is not of the form"):
        signin.parse_role_map("batch-admins")


def test_roles_are_added_and_removed_to_match_and_other_groups_are_left_alone(settings, db):
    settings.OIDC_ROLE_MAP = "batch-admins=Admins,batch-ops=Operators,batch-viewers=Viewers"
    user = User.objects.create_user("ana")
    manual = Group.objects.create(name="EU team")  # given by an admin, not named in the map
    user.groups.add(Group.objects.get(name="Admins"), Group.objects.get(name="Submitters"), manual)

    now = signin.roles_apply(user=user, provider_groups=["batch-ops", "batch-viewers", "other"])

    assert now == ["Operators", "Viewers"]
    assert sorted(user.groups.values_list("name", flat=True)) == [
        "EU team",
        "Operators",
        "Submitters",  # not in the map: an admin's to change
        "Viewers",
    ]
    assert signin.roles_apply(user=user, provider_groups=[]) == []


def test_the_start_up_check_reports_a_bad_role_map_and_half_a_configuration(settings):
    settings.OIDC_ROLE_MAP = "batch-admins"
    settings.OIDC_ISSUER_URL = ISSUER
    settings.OIDC_RP_CLIENT_ID = ""
    ids = {m.id for m in signin.check_sign_in_settings()}
    assert {"batches.E010", "batches.E011"} <= ids

    settings.OIDC_ROLE_MAP = "batch-admins=Admins,x=EU team"
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    assert {m.id for m in signin.check_sign_in_settings()} == {"batches.W010"}

    settings.OIDC_ISSUER_URL = ""
    settings.BATCHWEB_PASSWORD_SIGNIN = False
    assert "batches.W012" in {m.id for m in signin.check_sign_in_settings()}


# --- Not configured -----------------------------------------------------------------------------


def test_without_configuration_the_sign_in_page_is_as_before_and_the_oidc_urls_are_404(
    client, db, settings
):
    settings.OIDC_ISSUER_URL = ""

    page = client.get(LOGIN).content.decode()

    assert "Sign in with" not in page
    assert 'name="password"' in page
    assert client.get(reverse("oidc-sign-in")).status_code == 404
    assert client.get(CALLBACK, {"code": "c", "state": "s"}).status_code == 404


# --- Signing in ---------------------------------------------------------------------------------


def test_the_sign_in_page_offers_the_provider_beside_the_password_form(client, provider):
    page = client.get(LOGIN + "?next=/activity/").content.decode()

    assert f'href="{reverse("oidc-sign-in")}?next=/activity/"' in page
    assert "Sign in with Acme SSO" in page
    assert 'name="password"' in page


def test_the_request_to_the_provider_uses_pkce_and_a_nonce(client, provider):
    params = provider.start(client)

    assert params["client_id"] == CLIENT_ID
    assert params["response_type"] == "code"
    assert params["redirect_uri"] == f"http://testserver{CALLBACK}"
    assert params["scope"] == "openid email profile"
    assert params["code_challenge_method"] == "S256"
    assert len(params["nonce"]) >= 32 and len(params["state"]) >= 32
    # The verifier goes with the code to the token endpoint and matches the challenge.
    provider.answer(provider.id_token(params["nonce"]), {"email": "a@example.com", "groups": []})
    client.get(CALLBACK, {"code": "code-1", "state": params["state"]})
    verifier = provider.token_requests[0]["code_verifier"][0]
    digest = hashlib.sha256(verifier.encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == params["code_challenge"]
    assert provider.token_requests[0]["client_secret"] == ["secret-1"]


def test_the_client_secret_can_go_by_http_basic(client, provider, settings):
    settings.OIDC_TOKEN_USE_BASIC_AUTH = True

    provider.sign_in(client)

    assert signed_in_as(client) == "ana"
    sent = next(c.request for c in provider.mock.calls if c.request.url == f"{ISSUER}/token")
    expected = base64.b64encode(f"{CLIENT_ID}:secret-1".encode()).decode()
    assert sent.headers["Authorization"] == f"Basic {expected}"
    assert "client_secret" not in provider.token_requests[0]


@pytest.mark.audit_sign_ins
def test_a_first_sign_in_makes_the_account_gives_its_roles_and_is_audited(client, provider):
    Group.objects.create(name="EU team")
    params = provider.start(client, next_url="/activity/")
    info = {"email": "ana@example.com", "preferred_username": "ana", "given_name": "Ana"}
    provider.answer(
        provider.id_token(params["nonce"]), {**info, "groups": ["batch-ops", "batch-eu"]}
    )

    response = client.get(CALLBACK, {"code": "code-1", "state": params["state"]})

    assert response.status_code == 302 and response["Location"] == "/activity/"
    assert signed_in_as(client) == "ana"
    ana = User.objects.get(username="ana")
    assert (ana.email, ana.first_name, ana.has_usable_password()) == (
        "ana@example.com",
        "Ana",
        False,
    )
    assert sorted(ana.groups.values_list("name", flat=True)) == ["EU team", "Operators"]
    assert client.session["oidc_id_token"].count(".") == 2  # kept for the sign-out
    event = Event.objects.get()
    assert (event.action, event.user, event.outcome) == ("sign_in", ana, "ok")
    assert event.detail == "from 127.0.0.1 with Acme SSO; groups: EU team, Operators"
    assert client.get(reverse("activity")).status_code == 200


def test_an_existing_account_is_found_by_its_trusted_address_and_a_group_change_applies_next_time(
    client, provider
):
    ana = trusted(User.objects.create_user("ana.local", "ANA@example.com", "pw-ana-123"))
    ana.groups.add(Group.objects.get(name="Admins"))

    provider.sign_in(client, groups=["batch-ops"], email_verified=True)

    assert signed_in_as(client) == "ana.local"
    assert list(ana.groups.values_list("name", flat=True)) == ["Operators"]
    assert User.objects.count() == 1
    client.post(reverse("logout"))
    provider.sign_in(client, groups=["batch-admins"])  # found by subject now
    assert list(ana.groups.values_list("name", flat=True)) == ["Admins"]


def test_the_discovery_document_is_fetched_once(client, provider):
    provider.sign_in(client)
    client.post(reverse("logout"))
    provider.sign_in(client)

    assert provider.discovery.call_count == 1
    assert signed_in_as(client) == "ana"


def test_a_provider_that_is_down_is_said_audited_and_tried_again_next_time(
    client, provider, no_network
):
    no_network.replace(
        responses.GET,
        f"{ISSUER}/.well-known/openid-configuration",
        body=requests.ConnectionError("refused"),
    )

    response = client.get(reverse("oidc-sign-in"))

    page = refusal(client, response)
    assert "Acme SSO cannot be reached right now" in page
    assert signed_in_as(client) is None
    event = Event.objects.get()
    assert (event.action, event.outcome) == ("sign_in_failed", "failed")
    assert "discovery document unavailable (ConnectionError)" in event.detail
    # Back up: the failure was not kept.
    no_network.replace(responses.GET, f"{ISSUER}/.well-known/openid-configuration", json=DISCOVERY)
    provider.sign_in(client)
    assert signed_in_as(client) == "ana"


@pytest.mark.parametrize(
    ("answer", "audited"),
    [
        ({"status": 500}, "discovery document unavailable (HTTP 500)"),
        ({"body": "<html>"}, "discovery document is not JSON"),
        ({"json": {**DISCOVERY, "jwks_uri": ""}}, "discovery document lacks jwks_uri"),
        ({"json": {**DISCOVERY, "issuer": "https://other"}}, "names another issuer"),
    ],
    ids=["500", "not JSON", "no keys", "another issuer"],
)
def test_a_discovery_document_that_cannot_be_used_is_refused(
    client, provider, no_network, answer, audited
):
    no_network.replace(responses.GET, f"{ISSUER}/.well-known/openid-configuration", **answer)

    page = refusal(client, client.get(reverse("oidc-sign-in")))

    assert "Acme SSO cannot be reached right now" in page
    assert audited in Event.objects.get().detail


def test_a_token_endpoint_that_fails_is_refused_clearly(client, provider, no_network):
    params = provider.start(client)
    no_network.post(f"{ISSUER}/token", status=503, body="down")

    page = refusal(client, client.get(CALLBACK, {"code": "c", "state": params["state"]}))

    assert "Acme SSO did not complete the sign-in" in page
    assert "a request to the provider failed (HTTP 503)" in Event.objects.get().detail
    assert signed_in_as(client) is None


@pytest.mark.parametrize(
    ("change", "audited"),
    [
        ({"key": OTHER_KEY}, "ID token refused: bad signature"),
        ({"aud": "another-app"}, "ID token refused: wrong audience 'another-app'"),
        ({"iss": "https://evil.example.test"}, "ID token refused: issued by"),
        ({"exp": 1000}, "ID token refused: expired"),
    ],
    ids=["bad signature", "wrong audience", "wrong issuer", "expired"],
)
def test_an_id_token_that_is_not_genuine_is_refused_audited_and_makes_nothing(
    client, provider, change, audited
):
    response = provider.sign_in(client, **change)

    page = refusal(client, response)
    assert "The answer from Acme SSO could not be verified, so nobody was signed in" in page
    assert signed_in_as(client) is None
    assert not User.objects.exists()
    event = Event.objects.get()
    assert (event.action, event.outcome) == ("sign_in_failed", "failed")
    assert audited in event.detail and "with Acme SSO" in event.detail
    assert "eyJ" not in event.detail  # never a token


def test_no_groups_claim_refuses_the_sign_in_and_takes_the_roles_away(client, provider):
    ana = trusted(User.objects.create_user("ana", "ana@example.com"))
    ana.groups.add(Group.objects.get(name="Operators"))

    page = refusal(client, provider.sign_in(client, groups=None, email_verified=True))

    assert "Acme SSO did not say which groups you are in (no “groups” claim)" in page
    assert signed_in_as(client) is None
    assert not ana.groups.exists()
    event = Event.objects.get()
    assert (event.username, event.outcome) == ("ana", "failed")
    assert "no 'groups' claim: no roles" in event.detail


def test_no_groups_claim_makes_no_account(client, provider):
    refusal(client, provider.sign_in(client, groups=None))

    assert not User.objects.exists()
    assert Event.objects.get().username == "ana@example.com"


def test_the_groups_claim_can_be_named_and_can_be_in_the_id_token(client, provider, settings):
    settings.OIDC_GROUPS_CLAIM = "roles"
    params = provider.start(client)
    token = provider.id_token(params["nonce"], roles=["batch-admins"])
    provider.answer(token, {"email": "ana@example.com"})

    client.get(CALLBACK, {"code": "code-1", "state": params["state"]})

    assert signed_in_as(client) == "ana@example.com"  # no preferred_username: the address
    assert list(User.objects.get().groups.values_list("name", flat=True)) == ["Admins"]


def test_a_disabled_account_is_refused(client, provider):
    trusted(User.objects.create_user("ana", "ana@example.com", is_active=False))

    page = refusal(client, provider.sign_in(client, email_verified=True))

    assert "Your batchweb account is switched off" in page
    assert signed_in_as(client) is None


def test_a_superuser_address_does_not_sign_the_superuser_in_unless_allowed(
    client, provider, settings
):
    """The provider vouches for an email address: it must not open a superuser's account."""
    trusted(User.objects.create_superuser("root", "ana@example.com", "pw-root-123456"))

    page = refusal(client, provider.sign_in(client, email_verified=True))

    assert "superusers sign in with their password" in page
    assert signed_in_as(client) is None
    settings.OIDC_SUPERUSERS = True
    provider.sign_in(client, email_verified=True)
    assert signed_in_as(client) == "root"


def test_a_state_used_twice_or_unknown_is_refused(client, provider):
    params = provider.start(client)
    provider.answer(provider.id_token(params["nonce"]), {"email": "a@example.com", "groups": []})
    client.get(CALLBACK, {"code": "code-1", "state": params["state"]})
    client.post(reverse("logout"))

    page = refusal(client, client.get(CALLBACK, {"code": "code-1", "state": params["state"]}))

    assert "That sign-in link has expired or was already used" in page
    assert signed_in_as(client) is None
    assert "unknown or reused state" in Event.objects.filter(outcome="failed").get().detail


def test_the_provider_saying_no_is_shown_and_audited(client, provider):
    params = provider.start(client)

    response = client.get(
        CALLBACK,
        {"error": "access_denied", "error_description": "User cancelled", "state": params["state"]},
    )

    assert "Acme SSO did not sign you in (User cancelled)" in refusal(client, response)
    assert "the provider answered access_denied" in Event.objects.get().detail


# --- Signing out --------------------------------------------------------------------------------


def test_signing_out_ends_the_provider_session_too(client, provider):
    provider.sign_in(client)
    id_token = client.session["oidc_id_token"]

    assert client.get(reverse("logout")).status_code == 405  # never by a link
    response = client.post(reverse("logout"))

    assert signed_in_as(client) is None
    location = urlparse(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{ISSUER}/logout"
    assert parse_qs(location.query) == {
        "id_token_hint": [id_token],
        "post_logout_redirect_uri": [f"http://testserver{LOGIN}"],
        "client_id": [CLIENT_ID],
    }


def test_a_password_session_signs_out_here_only(client, provider, viewer):
    client.force_login(viewer)

    response = client.post(reverse("logout"))

    assert response["Location"] == LOGIN
    assert signed_in_as(client) is None


# --- Which account a sign-in is (issue 19, item 1) ---------------------------------------------

BOSS = "boss@corp.example"


def typed_on_profile(user: User, address: str) -> None:
    """USER, signed in with a password in a browser of their own, types ADDRESS on /profile/."""
    browser = Client()
    browser.force_login(user, backend="batches.services.signin.PasswordBackend")
    response = browser.post(reverse("profile"), {"email": address, "my_batches": "on"})
    assert response.status_code == 302


def test_an_address_typed_on_the_profile_does_not_take_over_a_new_company_account(
    client, provider, mailoutbox
):
    """The attack of issue 19: someone with any account types boss's address on their profile;
    boss's first company sign-in makes boss an account of their own, and gives the attacker
    nothing (no sign-in as them, no role, not even the address)."""
    mallory = User.objects.create_user("mallory", "mallory@example.com", "pw-mallory-123")
    typed_on_profile(mallory, BOSS)

    provider.sign_in(
        client, groups=["batch-admins"], email=BOSS, username="boss", sub="boss-1",
        email_verified=True,
    )  # fmt: skip

    assert signed_in_as(client) == "boss"
    boss = User.objects.get(username="boss")
    assert list(boss.groups.values_list("name", flat=True)) == ["Admins"]
    assert boss.email == BOSS and addresses.email_trusted(user=boss)
    assert CompanyIdentity.objects.get(subject="boss-1").user == boss
    mallory.refresh_from_db()
    assert mallory.email == "mallory@example.com"
    assert not mallory.groups.exists()
    assert not addresses.email_trusted(user=mallory)
    assert [m.to for m in mailoutbox] == [[BOSS]]  # only the link, to boss's own mailbox


@pytest.mark.parametrize("how", ["typed on the profile", "on the account before the upgrade"])
def test_an_address_someone_else_has_unverified_does_not_refuse_its_owner(client, provider, how):
    """The denial of service of issue 19: boss has an account (address set by an admin);
    another account with boss's address must not make boss's sign-in ambiguous."""
    boss = trusted(User.objects.create_user("boss", BOSS))
    mallory = User.objects.create_user("mallory", "mallory@example.com", "pw-mallory-123")
    if how == "typed on the profile":
        typed_on_profile(mallory, BOSS)
    else:  # an address put on an account before identities were recorded: not trusted
        User.objects.filter(pk=mallory.pk).update(email=BOSS.upper())

    provider.sign_in(client, email=BOSS, username="boss", sub="boss-1", email_verified=True)

    assert signed_in_as(client) == "boss"
    assert CompanyIdentity.objects.get().user == boss
    assert User.objects.count() == 2


def test_a_later_sign_in_is_found_by_subject_whatever_address_it_brings(client, provider):
    provider.sign_in(client, email_verified=True)
    ana = User.objects.get()
    client.post(reverse("logout"))

    provider.sign_in(client, email="ana.new@example.com", username="someone-else")

    assert signed_in_as(client) == ana.username
    assert User.objects.count() == 1


def test_an_unverified_address_on_an_account_never_links_a_sign_in(client, provider):
    """An address from before identities were recorded, the provider verifying it or not: the
    sign-in gets an account of its own (an admin can vouch for the address to link them)."""
    ana = User.objects.create_user("ana", "ana@example.com", "pw-ana-123")
    ana.groups.add(Group.objects.get(name="Admins"))

    provider.sign_in(client, email_verified=True)

    assert signed_in_as(client) == "ana@example.com"  # "ana" is taken: the next free name
    assert list(ana.groups.values_list("name", flat=True)) == ["Admins"]  # untouched
    assert not CompanyIdentity.objects.filter(user=ana).exists()


def test_a_trusted_address_links_only_when_the_provider_says_it_is_verified(client, provider):
    ana = trusted(User.objects.create_user("ana", "ana@example.com", "pw-ana-123"))

    provider.sign_in(client)  # no email_verified claim

    assert signed_in_as(client) == "ana@example.com"
    new = User.objects.get(username="ana@example.com")
    assert new != ana
    assert addresses.email_source(user=new) == "not verified"  # not vouched for by anyone


@pytest.mark.parametrize("source", ["admin", "provider", "verified"])
def test_each_trusted_source_links(client, provider, source):
    ana = trusted(User.objects.create_user("ana.local", "ana@example.com"), source)

    provider.sign_in(client, email_verified="true")  # some providers send a string

    assert signed_in_as(client) == "ana.local"
    assert CompanyIdentity.objects.get().user == ana


def test_an_address_changed_after_it_was_vouched_for_is_not_trusted(client, provider):
    ana = trusted(User.objects.create_user("ana.local", "old@example.com"))
    User.objects.filter(pk=ana.pk).update(email="ana@example.com")  # a shell, a script

    provider.sign_in(client, email_verified=True)

    assert signed_in_as(client) == "ana"


def test_two_accounts_with_a_trusted_address_are_refused_clearly(client, provider):
    trusted(User.objects.create_user("ana.one", "ana@example.com"))
    trusted(User.objects.create_user("ana.two", "ANA@example.com"))

    page = refusal(client, provider.sign_in(client, email_verified=True))

    assert "Two batchweb accounts have the address ana@example.com" in page
    assert signed_in_as(client) is None
    assert not CompanyIdentity.objects.exists()
    assert User.objects.count() == 2


def test_an_account_linked_to_another_subject_is_not_taken_by_its_address(client, provider):
    provider.sign_in(client, email_verified=True)  # ana, subject u-1, address from the provider
    client.post(reverse("logout"))

    page = refusal(client, provider.sign_in(client, sub="u-2", email_verified=True))

    assert "belongs to another Acme SSO account" in page
    assert signed_in_as(client) is None
    assert list(CompanyIdentity.objects.values_list("subject", flat=True)) == ["u-1"]


def test_userinfo_about_another_subject_is_refused(client, provider):
    params = provider.start(client)
    provider.answer(
        provider.id_token(params["nonce"], sub="u-1"),
        {"sub": "u-2", "email": "ana@example.com", "groups": ["batch-ops"]},
    )

    page = refusal(client, client.get(CALLBACK, {"code": "code-1", "state": params["state"]}))

    assert "could not be verified" in page
    assert not User.objects.exists() and not CompanyIdentity.objects.exists()


def test_a_new_account_never_takes_a_name_in_use(client, provider):
    User.objects.create_user("ana", "x@example.com")
    User.objects.create_user("ANA@example.com", "y@example.com")

    provider.sign_in(client)

    assert signed_in_as(client) == "ana-2"


def test_the_provider_vouches_for_the_address_of_the_accounts_it_signs_in(client, provider):
    provider.sign_in(client, email_verified=True)

    record = AccountEmail.objects.get(user__username="ana")
    assert (record.address, record.source) == ("ana@example.com", "provider")


def test_the_librarys_lookup_goes_through_the_one_rule(provider):
    """mozilla-django-oidc's own lookup (filter_users_by_claims) answers by subject and trusted
    address, never by an address alone."""
    mallory = User.objects.create_user("mallory", BOSS)
    claims = {"iss": ISSUER, "sub": "boss-1", "email": BOSS, "email_verified": True}
    backend = signin.CompanyBackend()

    assert list(backend.filter_users_by_claims(claims)) == []
    trusted(mallory)
    assert list(backend.filter_users_by_claims(claims)) == [mallory]
