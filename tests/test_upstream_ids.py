"""Upstream ids: one pattern (openai_client.UPSTREAM_ID_REGEX) checked wherever an id reaches a
URL. A page or /v1/ path whose id is not of that shape is a 404 of the URL resolver, before any
view runs and with no upstream call; the client refuses to build a URL from such an id, whoever
asked; batches listed upstream with such ids are skipped by the sync rather than cached; and
every id parameter of the URLconf uses a strict converter (read from the URLconf, so a new
route is covered without editing this file).

A token reads only the files of the batches its owner may see and the files its owner uploaded.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.core import signing
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.converters import IntConverter
from django.urls.exceptions import Resolver404

from api.models import ApiFile
from api.services.tokens import token_create
from batches.converters import STRICT
from batches.forms import BatchCreateForm
from batches.models import Batch, default_connection
from batches.openai_client import (
    ClientConfig,
    InvalidId,
    InvalidRequest,
    NotABatch,
    OpenAIClient,
    is_upstream_id,
)
from batches.services.batches import batch_upsert
from batches.services.sync import batch_refresh_scheduled, batches_sync
from tests.conftest import make_batch, make_list

pytestmark = pytest.mark.django_db

API = settings.OPENAI_BASE_URL

# Each decoded by Django before the resolver sees it: `%2e%2e` is `..`, `%2F` a slash.
BAD_SEGMENTS = [
    ".",
    "..",
    "%2e",
    "%2e%2e",
    "%2E%2E",
    "..%2Fx",
    "a%2Fb",
    "file-1.jsonl",
    "file%20x",
    "file-%25",
    "file-%C3%A9",  # é
    "%E2%80%AE",  # a right-to-left override
    "x" * 129,
]

REAL_IDS = [
    "batch_abc123",
    "file-abc123",
    "batch_6287a3d7-3e1e-4b3e-9e2f-1c1b2a3d4e5f",  # Azure
    "file-b4fa7277f3eb4722ac18b90f46102c3f",  # Azure
    "batch-gateway789",  # a gateway's dash
    "x" * 128,
]


def bearer(plain: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture
def read_token(viewer) -> str:
    return token_create(user=viewer, name="r", scope="read", days=7).plain


@pytest.fixture
def submit_token(submitter) -> str:
    return token_create(user=submitter, name="s", scope="submit", days=7).plain


def assert_openai_404(response) -> None:
    assert response.status_code == 404, response.content
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


# --- The pattern -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", REAL_IDS)
def test_real_ids_of_openai_azure_and_gateways_have_the_shape(value):
    assert is_upstream_id(value)


@pytest.mark.parametrize(
    "value", ["", ".", "..", "a/b", "a.b", "a b", "a%2e", "a\n", "é", "x" * 129, None, 12]
)
def test_dots_slashes_percents_spaces_unicode_empty_and_long_ids_do_not(value):
    assert not is_upstream_id(value)


# --- /v1/: a 404 before any view, nothing sent upstream ----------------------------------------


@pytest.mark.parametrize("segment", BAD_SEGMENTS)
@pytest.mark.parametrize("template", ["/v1/files/{}", "/v1/files/{}/content", "/v1/batches/{}"])
def test_a_v1_read_with_a_bad_id_is_a_404_and_nothing_is_sent(
    client, no_network, read_token, template, segment
):
    response = client.get(template.format(segment), headers=bearer(read_token))

    assert_openai_404(response)
    assert len(no_network.calls) == 0


@pytest.mark.parametrize("segment", ["..", "%2e%2e", ".", "..%2Fx", "x" * 129])
def test_a_v1_cancel_with_a_bad_id_is_a_404_and_nothing_is_sent(
    client, no_network, submit_token, segment
):
    response = client.post(f"/v1/batches/{segment}/cancel", headers=bearer(submit_token))

    assert_openai_404(response)
    assert len(no_network.calls) == 0


def test_a_v1_list_after_a_bad_cursor_is_a_400_and_nothing_is_sent(client, no_network, read_token):
    response = client.get("/v1/batches", {"after": "../x"}, headers=bearer(read_token))

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "after"
    assert len(no_network.calls) == 0


def test_a_v1_create_from_a_bad_file_id_is_a_400_and_nothing_is_sent(
    client, no_network, submit_token
):
    response = client.post(
        "/v1/batches",
        {"input_file_id": "../x", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        content_type="application/json",
        headers=bearer(submit_token),
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_file_id"
    assert len(no_network.calls) == 0


# --- Pages: the same pattern ---------------------------------------------------------------------


@pytest.mark.parametrize("segment", [".", "..", "a.b", "é"])
@pytest.mark.parametrize(
    "template",
    [
        "/connections/default/batches/{}/",
        "/connections/default/batches/{}/results/",
        "/connections/default/batches/{}/files/output/",
        "/batches/{}/",
        "/batches/{}/results/",
        "/batches/new/{}/",
        "/batches/new/{}/capacity/wait/",
    ],
)
def test_a_page_path_with_a_bad_id_or_token_resolves_to_nothing(template, segment):
    with pytest.raises(Resolver404):
        resolve(template.format(segment))


@pytest.mark.parametrize(
    "path", ["/connections/default/batches/{}/", "/batches/{}/", "/batches/{}/results/"]
)
def test_a_page_path_with_an_over_long_id_resolves_to_nothing(path):
    with pytest.raises(Resolver404):
        resolve(path.format("x" * 129))


@pytest.mark.parametrize(
    "path",
    [
        "/connections/default/batches/../",
        "/connections/default/batches/%2e%2e/",
        "/connections/default/batches/./results/",
        "/connections/default/batches/..%2Fx/files/output/",
        "/batches/../",
        "/batches/new/../",
    ],
)
def test_a_page_with_a_bad_id_is_a_404_and_nothing_is_sent(viewer_client, no_network, path):
    response = viewer_client.get(path)

    assert response.status_code == 404
    assert len(no_network.calls) == 0


# --- The client: the last line, whatever the id's source -----------------------------------------


@pytest.fixture
def api_client() -> OpenAIClient:
    return OpenAIClient(ClientConfig(api_key="sk-test-ids", base_url=API, max_retries=0))


@pytest.mark.parametrize("bad_id", [".", "..", "a.b", "../files", "é", "x" * 129, ""])
def test_the_client_refuses_a_bad_id_without_sending(api_client, no_network, bad_id):
    calls = [
        lambda: api_client.retrieve_batch(bad_id),
        lambda: api_client.cancel_batch(bad_id),
        lambda: api_client.retrieve_file(bad_id),
        lambda: api_client.delete_file(bad_id),
        lambda: api_client.open_file_content(bad_id),
        lambda: next(api_client.iter_file_content(bad_id)),
    ]
    for call in calls:
        with pytest.raises(InvalidId) as caught:
            call()
        assert isinstance(caught.value, InvalidRequest)  # the client's family: callers catch it
        assert "is not an id" in str(caught.value)

    assert len(no_network.calls) == 0


@pytest.mark.parametrize(
    ("dialect", "base", "path"),
    [
        ("openai", API, "/batches/"),
        ("azure", "https://res.example.test/openai/v1", "/batches/"),
        ("azure-legacy", "https://res.example.test", "/openai/batches/"),
    ],
)
@pytest.mark.parametrize("batch_id", ["batch_6287a3d7-3e1e-4b3e-9e2f-1c1b2a3d4e5f", "batch-gw7"])
def test_the_client_sends_real_ids_in_every_dialect(no_network, dialect, base, path, batch_id):
    client = OpenAIClient(
        ClientConfig(api_key="sk-test-ids", base_url=base, dialect=dialect, max_retries=0)
    )
    no_network.get(f"{base}{path}{batch_id}", json=make_batch(id=batch_id))

    assert client.retrieve_batch(batch_id)["id"] == batch_id


def test_the_client_refuses_a_batch_answer_whose_id_it_could_not_fetch_again(
    api_client, no_network
):
    no_network.get(f"{API}/batches/batch_1", json=make_batch(id="batch_1/../x"))

    with pytest.raises(NotABatch):
        api_client.retrieve_batch("batch_1")


# --- Ids from upstream: skipped, never a crash -------------------------------------------------


def test_the_sync_skips_listed_batches_whose_ids_it_could_not_use(upstream, viewer_client):
    upstream.get(
        f"{API}/batches",
        json=make_list(
            [
                make_batch(id="batch_good", status="completed"),
                make_batch(id="..", status="completed"),
                make_batch(id="batch.dotted", status="completed"),
            ]
        ),
    )

    result = batches_sync(connection=default_connection(), refresh_running=False)

    assert result.skipped == 2
    assert list(Batch.objects.values_list("openai_id", flat=True)) == ["batch_good"]
    assert "2 skipped" in str(result)
    assert viewer_client.get("/").status_code == 200  # every cached row can be linked to


def test_a_cached_batch_with_a_bad_id_gets_last_error_not_a_crash(upstream):
    # One cached before the pattern (or by hand): the refresh says why, and sends nothing.
    batch = batch_upsert(payload=make_batch(id="batch_1", status="in_progress")).batch
    Batch.objects.filter(pk=batch.pk).update(openai_id="a.b")
    batch.refresh_from_db()

    outcome = batch_refresh_scheduled(batch=batch, client=OpenAIClient.from_settings())

    batch.refresh_from_db()
    assert outcome == "gone"
    assert "is not an id" in batch.last_error
    assert len(upstream.calls) == 0


# --- Forms --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["file-1.jsonl", "..", "file-1/../x", "file-é", "x" * 129])
def test_the_create_form_refuses_a_file_id_of_another_shape(value):
    form = BatchCreateForm(data={"input_file_id": value})
    form.is_valid()

    assert "input_file_id" in form.errors


# --- Files a token can read ----------------------------------------------------------------------


def test_a_read_token_reads_the_output_of_a_batch_its_owner_may_see(client, upstream, read_token):
    batch_upsert(
        payload=make_batch(id="batch_mine", status="completed", output_file_id="file-out1")
    )
    upstream.get(
        f"{API}/files/file-out1/content", body=b'{"a": 1}\n', content_type="application/jsonl"
    )

    response = client.get("/v1/files/file-out1/content", headers=bearer(read_token))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b'{"a": 1}\n'


@pytest.mark.parametrize("path", ["/v1/files/file-loose", "/v1/files/file-loose/content"])
def test_a_read_token_gets_a_404_for_a_file_of_no_batch_and_nothing_is_sent(
    client, no_network, read_token, path
):
    response = client.get(path, headers=bearer(read_token))

    assert_openai_404(response)
    assert len(no_network.calls) == 0


@pytest.mark.parametrize("path", ["/v1/files/file-secret-out", "/v1/files/file-secret-out/content"])
def test_a_read_token_gets_a_404_for_a_file_of_a_batch_it_cannot_see(
    client, no_network, read_token, research, path
):
    batch_upsert(
        payload=make_batch(id="batch_secret", status="completed", output_file_id="file-secret-out"),
        connection=research,
    )

    response = client.get(path, headers=bearer(read_token))

    assert_openai_404(response)
    assert len(no_network.calls) == 0


def test_a_token_reads_its_owner_s_uploads_and_not_another_person_s(
    client, upstream, submitter, viewer, submit_token
):
    connection = default_connection()
    ApiFile.objects.create(connection=connection, file_id="file-sams", user=submitter)
    ApiFile.objects.create(connection=connection, file_id="file-vics", user=viewer)
    upstream.get(f"{API}/files/file-sams", json={"id": "file-sams", "object": "file"})

    own = client.get("/v1/files/file-sams", headers=bearer(submit_token))
    others = client.get("/v1/files/file-vics", headers=bearer(submit_token))

    assert own.status_code == 200 and own.json()["id"] == "file-sams"
    assert_openai_404(others)
    assert [c.request.url for c in upstream.calls] == [f"{API}/files/file-sams"]


def test_an_upload_on_another_connection_is_not_readable_on_this_one(
    client, no_network, research, submitter, submit_token
):
    ApiFile.objects.create(connection=research, file_id="file-sams", user=submitter)

    response = client.get("/v1/files/file-sams", headers=bearer(submit_token))

    assert_openai_404(response)
    assert len(no_network.calls) == 0


# --- Every id of the URLconf takes a strict converter ------------------------------------------


def _routes(resolver: URLResolver, prefix: str = "", in_admin: bool = False):
    for entry in resolver.url_patterns:
        admin = in_admin or getattr(entry, "app_name", None) == "admin"
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield route, entry.pattern, admin
            yield from _routes(entry, route, admin)
        elif isinstance(entry, URLPattern):
            yield route, entry.pattern, admin


def _is_id(name: str) -> bool:
    return name.endswith("_id") or name in ("openai_id", "token")


def test_every_id_in_the_urlconf_uses_a_strict_converter():
    checked = 0
    for route, pattern, admin in _routes(get_resolver()):
        if admin:
            continue  # the admin site's own object ids are database keys, not upstream ids
        converters = getattr(pattern, "converters", None)
        if converters is None:  # a regex route: its groups cannot be checked, so allow none
            names = pattern.regex.groupindex
            assert not [n for n in names if _is_id(n)], f"{route}: use a path() converter"
            continue
        for name, converter in converters.items():
            if not _is_id(name):
                continue
            strict = isinstance(converter, IntConverter) or type(converter) in STRICT.values()
            assert strict, f"{route}: <{name}> must use one of {sorted(STRICT)} (or int)"
            checked += 1
    assert checked >= 10  # the walk found the routes (batches, files, submissions, tokens)


@pytest.mark.parametrize("name", ["upstream_id", "submission_token"])
def test_no_id_converter_takes_a_path_of_its_own(name):
    converter = STRICT[name]()

    for value in ["", ".", "..", "a/b", "a.b", "a%2F", "a b", "é"]:
        assert not re.fullmatch(converter.regex, value), (name, value)
        with pytest.raises(ValueError):
            converter.to_url(value)


def test_the_rest_of_a_legacy_link_has_no_dot_segments():
    converter = STRICT["page_rest"]()

    for value in ["", "results/", "results/5/", "results.csv", "files/output/"]:
        assert re.fullmatch(converter.regex, value), value
    for value in [".", "..", "./", "../", "../x", "a/../b", "a/./b", "a//b", "a/b/..", "é/"]:
        assert not re.fullmatch(converter.regex, value), value


def test_a_signed_token_is_taken_whole_and_nothing_else():
    converter = STRICT["signed_token"]()
    token = signing.TimestampSigner(salt="t").sign_object({"u": 1, "a": "x@example.com"})
    packed = signing.TimestampSigner(salt="t").sign_object({"a": "x" * 400}, compress=True)

    assert re.fullmatch(converter.regex, token) and re.fullmatch(converter.regex, packed)
    for value in ["", ".", "..", "a/b:c:d", "a:b", "../x:1:2", "a:b:c/"]:
        assert not re.fullmatch(converter.regex, value), value
