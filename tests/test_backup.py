"""`manage.py backup` and `manage.py restore`: a populated installation is backed up, wiped (the
database emptied, the data folder removed, a new encryption key), restored, and compared row by
row and file by file; the API key stored on a connection reads again. With SQLite's backup API
or pg_dump (whichever the database is) and with the portable json method, on SQLite and on
PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection

from batches.cache import generations as generation
from batches.models import (
    Batch,
    CacheGeneration,
    Connection,
    Event,
    ResultFile,
    ResultRow,
    Submission,
    SyncState,
    default_connection,
)
from batches.services.backup import BackupError, backup_create
from batches.services.batches import batch_upsert
from tests.conftest import make_batch

pytestmark = pytest.mark.django_db(transaction=True)

NATIVE = {"sqlite": "sqlite", "postgresql": "pg_dump"}


@pytest.fixture
def install(tmp_path, settings, monkeypatch) -> Path:
    """An installation's data folder with its key files, as `make run` leaves it."""
    monkeypatch.delenv("BATCHWEB_ENCRYPTION_KEY", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    settings.DATA_DIR = data
    settings.SECRET_KEY_FILE = data / "secret_key"
    settings.ENCRYPTION_KEY_FILE = data / "encryption_key"
    key = Fernet.generate_key().decode()
    (data / "secret_key").write_text("secret-key-of-this-install\n")
    (data / "encryption_key").write_text(key + "\n")
    settings.BATCHWEB_ENCRYPTION_KEY = key
    return data


def _populate(data: Path) -> None:
    ada = User.objects.create_superuser("ada", "ada@example.com", "pw-ada-123")
    bob = User.objects.create_user("bob", "bob@example.com", "pw-bob-123")
    bob.groups.add(Group.objects.get(name="Submitters"))
    research = Connection(name="Research", slug="research", base_url="https://research.test/v1")
    research.set_key("sk-research-0123456789")
    research.save()
    research.groups.add(Group.objects.get(name="Operators"))
    done = batch_upsert(
        payload=make_batch(
            id="batch_done",
            status="completed",
            output_file_id="file-out",
            metadata={"job": "nightly", "owner": "bob"},
            usage={
                "input_tokens": 1200,
                "input_tokens_details": {"cached_tokens": 200},
                "output_tokens": 300,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 1500,
            },
        )
    ).batch
    Batch.objects.filter(pk=done.pk).update(
        created_by=bob, cost_usd=Decimal("0.001234"), list_cost_usd=Decimal("0.002468")
    )
    running = batch_upsert(payload=make_batch(id="batch_running"), connection=research).batch
    batch_upsert(payload=make_batch(id="batch_failed", status="failed"))
    Event.record(Event.Action.CREATE, user=bob, batch=done, detail="questions.jsonl")
    Event.record(Event.Action.CANCEL_FAILED, user=ada, batch=running, detail="upstream said no")
    Event.record(Event.Action.SIGN_IN_FAILED, username="mallory", detail="from 10.0.0.9")
    SyncState.get(default_connection()).record_success()
    copy = data / "results" / f"{done.pk}-batch_done" / "output.jsonl"
    copy.parent.mkdir(parents=True)
    copy.write_text('{"custom_id": "req-1", "response": {"status_code": 200}}\n')
    ResultFile.objects.create(batch=done, kind="output", file_id="file-out", path=str(copy))
    ResultRow.objects.create(batch=done, custom_id="req-1", ok=True, source="output", offset=0)
    staged = data / "staging" / "tok-waiting-abcd.jsonl"
    staged.parent.mkdir(parents=True)
    staged.write_text('{"custom_id": "a"}\n')
    Submission.objects.create(token="tok-waiting", user=bob, state="checked", staged_path=staged)
    (data / "worker.log").write_text("a log line\n")


def _rows() -> dict[str, list[dict]]:
    """Every row of every table the project has, in a comparable form; but the cache
    generation, which a restore raises past the one it had (see the test below)."""
    return {
        model._meta.label: list(model._base_manager.order_by("pk").values())
        for model in apps.get_models()
        if model._meta.managed and not model._meta.proxy and model is not CacheGeneration
    }


def _m2m() -> dict[str, list]:
    return {
        "user groups": sorted(User.groups.through.objects.values_list("user_id", "group_id")),
        "group perms": sorted(
            Group.permissions.through.objects.values_list("group_id", "permission_id")
        ),
        "connection groups": sorted(
            Connection.groups.through.objects.values_list("connection_id", "group_id")
        ),
    }


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _wipe(data: Path, settings) -> None:
    """Everything lost: the database emptied (the roles and the default connection come back, as
    after a fresh migrate), the data folder gone, a new installation's keys."""
    call_command("flush", interactive=False, verbosity=0)
    shutil.rmtree(data)
    data.mkdir()
    new_key = Fernet.generate_key().decode()
    (data / "encryption_key").write_text(new_key + "\n")
    settings.BATCHWEB_ENCRYPTION_KEY = new_key
    batch_upsert(payload=make_batch(id="batch_after_the_backup"))
    assert not Connection.objects.filter(slug="research").exists()


@pytest.mark.parametrize("method", ["native", "json"])
def test_a_backup_restores_the_database_the_data_folder_and_the_keys(
    install, tmp_path, settings, method
):
    if method == "native" and connection.vendor == "postgresql" and not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    _populate(install)
    rows, m2m = _rows(), _m2m()
    generation_before = generation.current()
    files = _files(install)
    target = tmp_path / "backups" / "2026-11-29"

    out = io.StringIO()
    call_command("backup", str(target), method=method, stdout=out)

    expected = NATIVE[connection.vendor] if method == "native" else "json"
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["database"]["method"] == expected
    assert (target / manifest["database"]["file"]).is_file()
    assert ["batches", "0001_initial"] in manifest["migrations"]
    assert sorted(manifest["keys"]) == ["encryption_key", "secret_key"]
    assert f"Backed up the database ({expected}) and 2 files" in out.getvalue()
    assert not (target / "data" / "worker.log").exists()  # logs are not backed up
    assert (target / "keys" / "encryption_key").stat().st_mode & 0o077 == 0
    assert target.stat().st_mode & 0o077 == 0

    _wipe(install, settings)
    out = io.StringIO()
    call_command("restore", str(target), interactive=False, stdout=out)

    assert "Restored the database" in out.getvalue()
    assert _rows() == rows
    assert _m2m() == m2m
    # Pages cached while the database held later data are never served for the restored one.
    assert generation.current() > generation_before
    assert _files(install) == {k: v for k, v in files.items() if k != "worker.log"}
    # The restored key file is the one the stored API key was encrypted with.
    settings.BATCHWEB_ENCRYPTION_KEY = (install / "encryption_key").read_text().strip()
    assert Connection.objects.get(slug="research").api_key() == "sk-research-0123456789"
    assert (
        Batch.objects.get(openai_id="batch_done").result_files.get().path.startswith(str(install))
    )
    # The restored installation keeps working: new rows get new ids.
    Event.record(Event.Action.SIGN_IN, username="ada")
    assert batch_upsert(payload=make_batch(id="batch_new")).created


def test_a_backup_needs_a_new_folder_outside_the_data_folder(install, tmp_path):
    with pytest.raises(BackupError, match="outside the data folder"):
        backup_create(target=install / "backup")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    with pytest.raises(BackupError, match="not an empty folder"):
        backup_create(target=tmp_path / "full")


def test_restore_refuses_a_folder_that_is_not_a_finished_backup(install, tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(CommandError, match=r"no manifest\.json"):
        call_command("restore", str(tmp_path / "half"), interactive=False)


def test_restore_refuses_a_backup_of_a_newer_release(install, tmp_path):
    target = tmp_path / "backup"
    backup_create(target=target, method="json")
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["migrations"].append(["batches", "9999_from_the_future"])
    (target / "manifest.json").write_text(json.dumps(manifest))
    users = User.objects.count()

    with pytest.raises(CommandError, match="newer release"):
        call_command("restore", str(target), interactive=False)
    assert User.objects.count() == users


def test_restore_asks_first_and_a_no_changes_nothing(install, tmp_path, monkeypatch):
    target = tmp_path / "backup"
    backup_create(target=target, method="json")
    batch_upsert(payload=make_batch(id="batch_kept"))
    monkeypatch.setattr("builtins.input", lambda prompt: "no")

    with pytest.raises(CommandError, match="cancelled"):
        call_command("restore", str(target))
    assert Batch.objects.filter(openai_id="batch_kept").exists()


def test_a_key_from_the_environment_is_named_as_missing_from_the_backup(
    install, tmp_path, settings
):
    (install / "encryption_key").unlink()
    settings.BATCHWEB_ENCRYPTION_KEY = "a-passphrase-from-the-environment"
    err = io.StringIO()

    call_command("backup", str(tmp_path / "b"), method="json", stdout=io.StringIO(), stderr=err)

    assert "BATCHWEB_ENCRYPTION_KEY" in err.getvalue()
    assert "a-passphrase-from-the-environment" not in err.getvalue()
    assert not (tmp_path / "b" / "keys" / "encryption_key").exists()


# --- The commands on a live SQLite file ---------------------------------------------------------


def _manage(*args: str, data: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "batchweb.settings",
        "DJANGO_DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{data / 'batchweb.sqlite3'}",
        "BATCHWEB_DATA_DIR": str(data),
        "OPENAI_API_KEY": "sk-test-key-never-shown",
    }
    for name in ("DJANGO_SECRET_KEY", "BATCHWEB_ENCRYPTION_KEY", "DJANGO_SECRET_KEY_FILE"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_backup_of_a_sqlite_file_in_use_holds_what_was_committed(tmp_path):
    """The real commands on a SQLite file in WAL mode, as `make run` leaves it, while another
    connection holds a write transaction: the backup does not wait for it and holds exactly
    what was committed; the database file is not copied as a file."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "encryption_key").write_text(Fernet.generate_key().decode() + "\n")
    assert _manage("migrate", "--noinput", "-v", "0", data=data).returncode == 0
    live = sqlite3.connect(data / "batchweb.sqlite3", isolation_level=None)
    live.execute("INSERT INTO auth_group (name) VALUES ('committed')")
    live.execute("BEGIN IMMEDIATE")
    live.execute("INSERT INTO auth_group (name) VALUES ('not yet committed')")

    made = _manage("backup", str(tmp_path / "backup"), data=data)
    live.execute("COMMIT")

    assert made.returncode == 0, made.stderr
    assert "Backed up the database (sqlite)" in made.stdout
    assert sorted(p.name for p in (tmp_path / "backup" / "data").iterdir()) == []
    saved = sqlite3.connect(tmp_path / "backup" / "database.sqlite3")
    names = {name for (name,) in saved.execute("SELECT name FROM auth_group")}
    saved.close()
    assert "committed" in names and "not yet committed" not in names

    restored = _manage("restore", "--noinput", str(tmp_path / "backup"), data=data)

    assert restored.returncode == 0, restored.stderr
    names = {name for (name,) in live.execute("SELECT name FROM auth_group")}
    assert "committed" in names and "not yet committed" not in names
    live.close()


def test_a_damaged_backup_is_refused_and_changes_nothing(install, tmp_path):
    if connection.vendor == "postgresql" and not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    target = tmp_path / "backup"
    made = backup_create(target=target)
    batch_upsert(payload=make_batch(id="batch_after_the_backup"))
    database = target / json.loads((target / "manifest.json").read_text())["database"]["file"]
    content = database.read_bytes()
    database.write_bytes(content[: len(content) // 2] + b"\0garbage" * 64)

    with pytest.raises(CommandError, match=r"cannot be read|failed"):
        call_command("restore", str(target), interactive=False)

    assert made.method in {"sqlite", "pg_dump"}
    assert Batch.objects.filter(openai_id="batch_after_the_backup").exists()
    assert Group.objects.filter(name="Viewers").exists()
