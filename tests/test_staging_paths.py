"""Issue 19, item 2: a form's token was a file name. Whatever a request sends as a token, no
file outside data/staging is written, replaced or removed; another person's submission cannot
be replaced, confirmed or read through its token; uploads larger than any file limit are
refused before they are read; and each person's waiting files have a quota.

The tree: a temporary site folder holding the data folder a few levels down (so that `../..`
stays inside what the test watches), a batch's cached output under data/results, another
person's checked file under data/staging, and files around them. Each test compares a snapshot
of every file (bytes and modification time) before and after.
"""

from __future__ import annotations

import html
import inspect
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batches import storage
from batches.models import Batch, Connection, ResultFile, Submission, default_connection
from batches.services.result_files import batch_retry_stage, local_copy
from batches.services.submissions import StagingQuotaExceeded
from tests.test_result_files import INPUT_LINES, OUTPUT, finished_batch, jsonl, serve_batch
from tests.test_submissions import CREATE, confirm_url, post_file, valid_file

pytestmark = pytest.mark.django_db


# --- The tree -------------------------------------------------------------------------------


@dataclass
class Tree:
    site: Path  # everything the test watches
    data: Path  # settings.DATA_DIR, three levels down
    absolute: Path  # a short absolute folder outside the site, for `/tmp/...` tokens
    partial: Batch  # finished, some requests failed: a Retry stages a file
    all_ok: Batch  # finished, every request succeeded: a Retry has nothing to stage
    other: Submission  # another person's checked file, waiting in data/staging

    @property
    def staging(self) -> Path:
        return (self.data / "staging").resolve()

    def output_of(self, batch: Batch) -> Path:
        return Path(ResultFile.objects.get(batch=batch, kind="output").path)

    def attacks(self) -> dict[str, str]:
        """The tokens of the review: an absolute path, dot segments up and out of data/, and a
        path onto another batch's cached output (".jsonl" is added by the old code)."""
        return {
            "absolute": f"{self.absolute}/x",
            "tmp": "/tmp/x",
            "up": "../../x",
            "results": f"../results/{self.partial.pk}-{self.partial.openai_id}/output",
            "results-ok": f"../results/{self.all_ok.pk}-{self.all_ok.openai_id}/output",
        }


@pytest.fixture
def tree(settings, tmp_path, upstream, django_user_model) -> Iterator[Tree]:
    site = tmp_path / "site"
    data = site / "a" / "b" / "data"
    data.mkdir(parents=True)
    settings.DATA_DIR = data
    absolute = Path(tempfile.mkdtemp(prefix="bw-", dir="/tmp"))
    for path in (site / "x.jsonl", site / "a" / "b" / "x.jsonl", data / "x.jsonl"):
        path.write_text("planted\n")
    (absolute / "x.jsonl").write_text("planted\n")

    partial = finished_batch("batch_part")
    all_ok = finished_batch("batch_allok", errors=False, counts=(2, 2, 0))
    serve_batch(upstream, partial)
    serve_batch(upstream, all_ok, input=jsonl(INPUT_LINES[:2]), output=OUTPUT)
    for batch in (partial, all_ok):  # the cached copies a Retry reads (and the attack aims at)
        for kind in ("input", "output", "error"):
            local_copy(batch=batch, kind=kind)

    bob = django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob-123")
    bob.groups.add(Group.objects.get(name="Submitters"))
    staged = storage.data_path("staging", storage.new_name())
    staged.write_text('{"custom_id": "bob-1"}\n')
    other = Submission.objects.create(
        token=storage.new_name(),
        user=bob,
        state=Submission.State.CHECKED,
        staged_path=str(staged),
        filename="bob.jsonl",
        facts={"lines": 1, "bytes": staged.stat().st_size},
        request={"endpoint": "/v1/chat/completions"},
    )
    yield Tree(site, data, absolute, partial, all_ok, other)
    shutil.rmtree(absolute, ignore_errors=True)


Snapshot = dict[Path, tuple[bytes, int]]


def snapshot(tree: Tree) -> Snapshot:
    files: Snapshot = {}
    for root in (tree.site, tree.absolute):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                files[path.resolve()] = (path.read_bytes(), path.stat().st_mtime_ns)
    for path in Path("/tmp").glob("x*.jsonl"):  # the literal `/tmp/x` of the review
        if path.is_file():
            files[path.resolve()] = (path.read_bytes(), path.stat().st_mtime_ns)
    return files


def changed_outside_staging(tree: Tree, before: Snapshot, after: Snapshot) -> list[Path]:
    """Files written, replaced or removed anywhere but a file of data/staging the request's
    own person may come and go (another person's staged file counts as outside)."""
    protected = {Path(tree.other.staged_path).resolve()}
    changed = [p for p in before.keys() | after.keys() if before.get(p) != after.get(p)]
    return sorted(p for p in changed if p.parent != tree.staging or p in protected)


def text(response) -> str:
    return html.unescape(response.content.decode())


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def retry_url(batch: Batch) -> str:
    return reverse("batch-retry", args=[batch.connection.slug, batch.openai_id])


ATTACKS = ["absolute", "tmp", "up", "results", "results-ok"]


# --- The new-batch form ---------------------------------------------------------------------


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_form_token_that_is_a_path_writes_nothing_and_is_refused(submitter_client, tree, attack):
    before = snapshot(tree)

    response = post_file(submitter_client, tree.attacks()[attack], valid_file())

    assert response.status_code == 400
    assert "This form has expired or was damaged" in text(response)
    assert changed_outside_staging(tree, before, snapshot(tree)) == []
    assert list(tree.staging.iterdir()) == [Path(tree.other.staged_path).resolve()]
    assert Submission.objects.count() == 1


def test_a_checked_file_is_named_by_the_server_never_by_the_token(submitter_client, tree):
    token = submitter_client.get(CREATE).context["form"].initial["submission_token"]

    response = post_file(submitter_client, token, valid_file())

    assert response.status_code == 302
    staged = Path(Submission.objects.get(token=token).staged_path)
    assert staged.parent == tree.staging and token not in staged.name
    assert storage.stored_path("staging", str(staged)) == staged


# --- Retry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_retry_token_that_is_a_path_is_replaced_by_a_server_token(submitter_client, tree, attack):
    before = snapshot(tree)

    response = submitter_client.post(
        retry_url(tree.partial), {"submission_token": tree.attacks()[attack]}
    )

    submission = Submission.objects.exclude(pk=tree.other.pk).get()
    assert response.status_code == 302
    assert response["Location"] == confirm_url(submission.token)
    assert storage.is_token(submission.token)
    assert Path(submission.staged_path).parent == tree.staging
    assert changed_outside_staging(tree, before, snapshot(tree)) == []


@pytest.mark.parametrize("attack", ["results-ok", "results", "up", "absolute"])
def test_a_retry_of_an_all_succeeded_batch_neither_truncates_nor_deletes_the_target(
    submitter_client, tree, attack
):
    target = tree.output_of(tree.all_ok)
    kept = target.read_bytes()
    before = snapshot(tree)

    response = submitter_client.post(
        retry_url(tree.all_ok), {"submission_token": tree.attacks()[attack]}, follow=True
    )

    assert "nothing to retry" in " ".join(messages_of(response))
    assert target.read_bytes() == kept
    assert changed_outside_staging(tree, before, snapshot(tree)) == []
    assert list(tree.staging.iterdir()) == [Path(tree.other.staged_path).resolve()]


# --- Another person's submission ------------------------------------------------------------


def _as_it_was(submission: Submission) -> dict:
    row = Submission.objects.filter(pk=submission.pk).values().get()
    row.pop("updated_at")
    return row


def test_another_person_s_submission_cannot_be_replaced_through_its_token(submitter_client, tree):
    other = tree.other
    row, before = _as_it_was(other), snapshot(tree)

    form = post_file(submitter_client, other.token, valid_file())
    retry = submitter_client.post(
        retry_url(tree.partial), {"submission_token": other.token}, follow=True
    )
    by_id = submitter_client.post(
        CREATE,
        {"input_file_id": "file-x", "completion_window": "24h", "submission_token": other.token},
    )

    assert form.status_code == 400
    assert "This form has expired or was damaged" in text(form)
    assert by_id.status_code == 400
    assert "The retry could not be prepared" in " ".join(messages_of(retry))
    assert _as_it_was(other) == row
    assert changed_outside_staging(tree, before, snapshot(tree)) == []
    # Nothing of the refused requests was kept.
    assert list(Submission.objects.exclude(pk=other.pk)) == []
    assert list(tree.staging.iterdir()) == [Path(other.staged_path).resolve()]


def test_another_person_s_submission_cannot_be_confirmed_read_or_queued(
    submitter_client, tree, upstream
):
    token = tree.other.token
    row = _as_it_was(tree.other)

    assert submitter_client.get(confirm_url(token)).status_code == 404
    assert submitter_client.post(confirm_url(token)).status_code == 404
    wait = reverse("submission-capacity-wait", args=[token])
    cancel = reverse("submission-capacity-cancel", args=[token])
    assert submitter_client.post(wait).status_code == 404
    assert submitter_client.post(cancel).status_code == 404
    assert _as_it_was(tree.other) == row
    assert not [c for c in upstream.calls if "/files" in c.request.url and c.request.body]


def test_a_superuser_may_look_at_a_submission_but_not_send_it(client, admin_user, tree, upstream):
    client.force_login(admin_user)
    token = tree.other.token

    assert client.get(confirm_url(token)).status_code == 200
    assert client.post(confirm_url(token)).status_code == 404
    assert Submission.objects.get(pk=tree.other.pk).state == Submission.State.CHECKED


# --- Every view that takes a token ----------------------------------------------------------


SAMPLE = {"slug": "default"}


def token_routes() -> tuple[list[str], list[str]]:
    """Every route of the URLconf that takes a token: (routes with a `token` path parameter,
    routes whose view reads a `submission_token` form field). Walked, so a new view is in."""
    in_path: list[str] = []
    in_form: list[str] = []

    def walk(patterns: list, prefix: str) -> None:
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif isinstance(p, URLPattern):
                params = re.findall(r"<(?:\w+:)?(\w+)>", route)
                if "token" in params:
                    in_path.append(route)
                    continue
                try:
                    source = inspect.getsource(inspect.unwrap(p.callback))
                except (OSError, TypeError):
                    continue
                if "submission_token" in source or "BatchCreateForm" in source:
                    in_form.append(route)

    walk(get_resolver().url_patterns, "")
    return in_path, in_form


IN_PATH, IN_FORM = token_routes()


def test_the_walk_finds_the_views_that_take_a_token():
    assert "batches/new/" in IN_FORM
    assert any(r.endswith("/retry/") for r in IN_FORM)
    assert any(r.startswith("batches/new/<") and r.endswith("/") for r in IN_PATH)
    assert any(r.endswith("capacity/wait/") for r in IN_PATH)
    assert any(r.endswith("capacity/cancel/") for r in IN_PATH)


def _url(route: str, token: str, openai_id: str) -> str:
    values = {**SAMPLE, "openai_id": openai_id, "token": quote(token, safe="")}
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values.get(m.group(1), "1"), route)


PATHLIKE = st.lists(
    st.sampled_from(["..", "/", ".", "x", "results", "staging", "output", "\x00", "é", "~",
                     "\\", "%2e", "tmp", "-", "_", "a" * 20, "\u202e", " ", "\n"]),
    max_size=12,
).map("".join)  # fmt: skip


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_token_sent_to_any_view_changes_a_file_outside_staging(submitter, tree, data):
    attacks = tree.attacks()
    token = data.draw(
        st.one_of(
            st.text(max_size=70),
            PATHLIKE,
            st.sampled_from([*attacks.values(), tree.other.token, storage.new_name()]),
        ),
        label="token",
    )
    other_row = _as_it_was(tree.other)
    before = snapshot(tree)
    # A view that fails must fail after writing nothing: the files are compared first.
    client = Client(raise_request_exception=False)
    client.force_login(submitter)
    statuses = []

    for route in IN_FORM:
        for batch in (tree.partial, tree.all_ok) if "openai_id" in route else (tree.partial,):
            upload = SimpleUploadedFile("in.jsonl", valid_file(), content_type="application/jsonl")
            response = client.post(
                _url(route, token, batch.openai_id),
                {"submission_token": token, "completion_window": "24h", "input_file": upload},
            )
            statuses.append(response.status_code)
    for route in IN_PATH:
        url = _url(route, token, tree.partial.openai_id)
        statuses += [client.get(url).status_code, client.post(url).status_code]

    assert changed_outside_staging(tree, before, snapshot(tree)) == []
    assert _as_it_was(tree.other) == other_row
    assert 500 not in statuses


# --- Stored paths ---------------------------------------------------------------------------


def test_a_stored_path_outside_staging_is_neither_opened_nor_removed(submitter, tree, upstream):
    from batches.services.submissions import submission_submit, submissions_cleanup

    target = tree.output_of(tree.partial)
    kept = target.read_bytes()
    row = Submission.objects.create(
        token=storage.new_name(),
        user=submitter,
        state=Submission.State.CHECKED,
        staged_path=str(target),
        filename="x.jsonl",
        request={"endpoint": "/v1/chat/completions"},
    )

    with pytest.raises(Exception, match="no longer on the server"):
        submission_submit(submission=row, user=submitter)
    Submission.objects.filter(pk=row.pk).update(state=Submission.State.CHECKED)
    submissions_cleanup(now=Submission.objects.get(pk=row.pk).updated_at.replace(year=2999))

    assert target.read_bytes() == kept
    assert not [c for c in upstream.calls if c.request.method == "POST"]


def test_the_migration_forgets_stored_paths_outside_staging(submitter, tree):
    from importlib import import_module
    from types import SimpleNamespace

    from django.apps import apps
    from django.db import connection

    migration = import_module("batches.migrations.0018_files")
    good = storage.data_path("staging", storage.new_name())
    rows = {
        value: Submission.objects.create(
            token=storage.new_name(), user=submitter, staged_path=value, state="checked"
        )
        for value in [
            str(good),
            "/tmp/x.jsonl",
            str(tree.staging / ".." / "results" / "x.jsonl"),
            str(tree.output_of(tree.partial)),
            "relative/x.jsonl",
        ]
    }

    migration.forget_staged_paths_outside_staging(apps, SimpleNamespace(connection=connection))

    kept = {value: Submission.objects.get(pk=row.pk).staged_path for value, row in rows.items()}
    assert kept == {value: (value if value == str(good) else "") for value in rows}
    assert Path(tree.other.staged_path).exists()  # files are never removed by it


# --- Upload size and quota ------------------------------------------------------------------


@pytest.fixture
def small_limit(settings, db):
    """A file limit of 1,000 bytes and 2,000 for the rest of the form: 3,000 in all."""
    default_connection()
    Connection.objects.update(max_file_bytes=1_000)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    return 3_000


def test_a_body_larger_than_the_largest_file_limit_is_refused_before_it_is_read(
    submitter_client, small_limit, tree
):
    before = snapshot(tree)
    # Ten gigabytes announced, a few bytes sent: reading the body would fail the test client
    # ("Cannot read more than the available bytes"), so a 413 here was answered unread.
    response = submitter_client.post(
        CREATE,
        {"submission_token": storage.new_name(), "input_file": SimpleUploadedFile("a", b"{}")},
        CONTENT_LENGTH=str(10 * 1024**3),
    )

    assert response.status_code == 413
    page = text(response)
    assert "The upload is too large: 10,240 MB" in page
    assert "batchweb takes at most 3,000 bytes in one request" in page
    assert Submission.objects.count() == 1
    assert changed_outside_staging(tree, before, snapshot(tree)) == []


def test_the_limit_is_the_largest_connection_s_plus_the_form(submitter_client, small_limit):
    from batches.uploads import upload_limit

    assert upload_limit() == small_limit
    Connection.objects.create(name="Big", slug="big", base_url="https://big.test/v1")
    assert upload_limit() > 200 * 1024 * 1024  # a connection of the default 200 MB
    response = post_file(submitter_client, storage.new_name(), valid_file())
    assert response.status_code != 413


def test_an_api_upload_too_large_gets_an_openai_shaped_413(client, small_limit):
    response = client.post("/v1/files", data=b"x" * 10, content_type="multipart/form-data; b=x",
                           CONTENT_LENGTH="5000")  # fmt: skip

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "too large" in error["message"]


def test_a_body_under_the_limit_is_read_as_before(submitter_client, small_limit, tree):
    response = post_file(submitter_client, storage.new_name(), valid_file(1))

    assert response.status_code == 302


def _big_file(size: int) -> bytes:
    lines = []
    total = 0
    i = 0
    while total < size:
        lines.append(INPUT_LINES[0] | {"custom_id": f"req-{i}"})
        total += 150
        i += 1
    return jsonl(lines)


def test_a_person_past_the_staging_quota_gets_a_form_error_and_no_file_is_kept(
    submitter_client, settings, tree
):
    settings.STAGING_QUOTA_MB = 1
    content = _big_file(600 * 1024)
    first = post_file(submitter_client, storage.new_name(), content)
    assert first.status_code == 302
    staged = sorted(tree.staging.iterdir())

    second = post_file(submitter_client, storage.new_name(), content)

    assert second.status_code == 400
    assert "each person may keep waiting on the server" in text(second)
    assert "1 MB" in text(second)
    assert sorted(tree.staging.iterdir()) == staged
    assert Submission.objects.count() == 2  # bob's and the first: none for the second


def test_the_same_form_sent_again_does_not_count_its_own_file(submitter_client, settings, tree):
    settings.STAGING_QUOTA_MB = 1
    content = _big_file(600 * 1024)
    token = storage.new_name()

    assert post_file(submitter_client, token, content).status_code == 302
    assert post_file(submitter_client, token, content).status_code == 302


def test_a_retry_past_the_quota_keeps_no_file(submitter, settings, tree):
    settings.STAGING_QUOTA_MB = 0

    with pytest.raises(StagingQuotaExceeded):
        batch_retry_stage(batch=tree.partial, user=submitter, token=storage.new_name())
    assert list(tree.staging.iterdir()) == [Path(tree.other.staged_path).resolve()]


# --- Restore --------------------------------------------------------------------------------


def test_a_restore_keeps_a_crafted_backup_s_files_inside_data(settings, tmp_path):
    from batches.services.backup import _restore_data

    data = tmp_path / "data"
    data.mkdir()
    settings.DATA_DIR = data
    backup = tmp_path / "backup" / "data"
    (backup / "results").mkdir(parents=True)
    (backup / "results" / "ok.jsonl").write_text("ok\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("server secret\n")
    (backup / "results" / "leak.jsonl").symlink_to(secret)
    (backup / "staging").symlink_to(tmp_path, target_is_directory=True)
    (data / "secret_key").write_text("live key\n")
    (backup / "secret_key").write_text("attacker key\n")

    count = _restore_data(backup, data, skip={(data / "secret_key").resolve()})

    assert count == 1
    assert (data / "results" / "ok.jsonl").read_text() == "ok\n"
    assert not (data / "results" / "leak.jsonl").exists()
    assert (data / "secret_key").read_text() == "live key\n"
    assert secret.read_text() == "server secret\n"


def test_a_manifest_naming_another_database_file_is_refused(settings, tmp_path):
    import json

    from batches.services.backup import BackupError, backup_restore

    source = tmp_path / "backup"
    source.mkdir()
    manifest = {"format": 1, "database": {"method": "sqlite", "file": "../../etc/passwd"},
                "migrations": []}  # fmt: skip
    (source / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(BackupError, match="names no database file"):
        backup_restore(source=source)
