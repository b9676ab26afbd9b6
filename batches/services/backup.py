"""Backing up and restoring an installation: the database, the files in `data/`, and the keys.

A backup is a folder (docs/backup.md):

    manifest.json         what is in it, written last: a folder without it is not a backup
    database.sqlite3      SQLite: a copy made with SQLite's online backup API
    database.pgdump       PostgreSQL: `pg_dump --format=custom`
    database.json         either, with --method json: Django's dumpdata, every table
    data/                 the files in BATCHWEB_DATA_DIR: local copies of result files,
                          uploads waiting for confirmation (not the database file, not logs)
    keys/secret_key       the key files (DJANGO_SECRET_KEY_FILE, BATCHWEB_ENCRYPTION_KEY_FILE)
    keys/encryption_key   when the keys come from files; without the encryption key the API
                          keys stored on connections cannot be read

Why these methods: SQLite's backup API copies a consistent snapshot while the web and worker
processes keep writing (a file copy of a database in WAL mode may not be). pg_dump is
PostgreSQL's own consistent, fast dump and restores with pg_restore; it needs the client
programs of the server's major version. `--method json` (dumpdata/loaddata) needs nothing but
Django and moves between databases (SQLite to PostgreSQL), but holds the data in memory on
restore and is slower: the fallback when pg_dump is not installed.

A restore replaces the database and the files with the backup's; stop the web and worker
processes first, and run `manage.py migrate` after when the code is newer than the backup.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core import serializers
from django.core.management import call_command
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, router, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder

from .. import storage
from ..cache import generations

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE_FILES = {
    "sqlite": "database.sqlite3",
    "pg_dump": "database.pgdump",
    "json": "database.json",
}
# The key files, by their name in the backup's keys/ folder, and the setting naming each.
KEY_FILES = {"secret_key": "SECRET_KEY_FILE", "encryption_key": "ENCRYPTION_KEY_FILE"}
# Folders of data/ whose files belong to database rows: replaced whole on restore, so no file
# is left that the restored database knows nothing of.
OWNED_FOLDERS = ("results", "staging")


class BackupError(Exception):
    """A backup or restore cannot be done; the message says why and what to do."""


def _files(count: int) -> str:
    return f"{count:,} file{'' if count == 1 else 's'}"


@dataclass
class BackupResult:
    path: Path
    method: str
    files: int = 0
    bytes: int = 0
    keys: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        keys = ", ".join(self.keys) or "none"
        return (
            f"Backed up the database ({self.method}) and {_files(self.files)} "
            f"({self.bytes:,} bytes) of the data folder to {self.path}; key files: {keys}."
        )


@dataclass
class RestoreResult:
    path: Path
    method: str
    files: int = 0
    keys: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    migrate_needed: bool = False

    def __str__(self) -> str:
        keys = ", ".join(self.keys) or "none"
        text = (
            f"Restored the database ({self.method}) and {_files(self.files)} of the data "
            f"folder from {self.path}; key files: {keys}."
        )
        if self.migrate_needed:
            text += " This code is newer than the backup: run `manage.py migrate` next."
        return text


# --- Backup ---------------------------------------------------------------------------------


def backup_create(*, target: Path, method: str = "auto", using: str = "default") -> BackupResult:
    """Write a backup of the database, the data folder and the key files into `target` (a
    folder that does not exist yet, or is empty). `method`: "auto" (SQLite's backup API, or
    pg_dump when installed, else json), "native" (never json) or "json"."""
    connection = connections[using]
    target = Path(target).resolve()
    data_dir = Path(settings.DATA_DIR).resolve()
    if target == data_dir or data_dir in target.parents:
        raise BackupError(f"Choose a folder outside the data folder {data_dir} for the backup.")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} is not an empty folder: choose a new one.")
    method = _backup_method(connection, method)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    result = BackupResult(path=target, method=method)

    database_file = target / DATABASE_FILES[method]
    if method == "sqlite":
        _sqlite_backup(connection, database_file)
    elif method == "pg_dump":
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
              f"--file={database_file}"], connection)  # fmt: skip
    else:
        _json_dump(database_file, using=using)
    database_file.chmod(0o600)

    keys = {name: Path(getattr(settings, setting)).resolve() for name, setting in KEY_FILES.items()}
    skipped = set(keys.values()) | _sqlite_files(connection)
    result.files, result.bytes = _copy_tree(data_dir, target / "data", skip=skipped)
    for name, path in keys.items():
        if path.is_file():
            (target / "keys").mkdir(mode=0o700, exist_ok=True)
            shutil.copy2(path, target / "keys" / name)
            (target / "keys" / name).chmod(0o600)
            result.keys.append(name)
    result.warnings = _key_warnings(target / "keys")

    manifest = {
        "format": FORMAT,
        "created_at": dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds"),
        "database": {"vendor": connection.vendor, "method": method, "file": database_file.name},
        "migrations": sorted(
            [app, name] for app, name in MigrationRecorder(connection).applied_migrations()
        ),
        "data_dir": str(data_dir),
        "files": result.files,
        "keys": result.keys,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def _backup_method(connection: Any, method: str) -> str:
    if method not in {"auto", "native", "json"}:
        raise BackupError(f"Unknown method {method!r}: auto, native or json.")
    if method == "json":
        return "json"
    if connection.vendor == "sqlite":
        return "sqlite"
    if connection.vendor == "postgresql":
        if shutil.which("pg_dump") and shutil.which("pg_restore"):
            return "pg_dump"
        if method == "native":
            raise BackupError(
                "pg_dump is not installed: install PostgreSQL's client programs (the server's "
                "major version or newer), or back up with --method json."
            )
        return "json"
    if method == "native":
        raise BackupError(f"No native backup for {connection.vendor}: use --method json.")
    return "json"


def _sqlite_backup(connection: Any, path: Path) -> None:
    """A consistent copy while others write: SQLite's online backup API, read in one step."""
    connection.ensure_connection()
    copy = sqlite3.connect(path)
    try:
        connection.connection.backup(copy)
    finally:
        copy.close()


class _PreciseEncoder(DjangoJSONEncoder):
    """dumpdata's encoder cuts times to the millisecond; a backup keeps them whole."""

    def default(self, o: Any) -> Any:
        if isinstance(o, dt.datetime | dt.time):
            return o.isoformat()
        return super().default(o)


def _json_dump(path: Path, *, using: str) -> None:
    """Every row of every table, as `dumpdata --all` writes them (loaddata reads them back)."""
    models = [
        model
        for model in apps.get_models()
        if model._meta.managed
        and not model._meta.proxy
        and router.allow_migrate_model(using, model)
    ]
    rows = itertools.chain.from_iterable(
        model._base_manager.using(using).order_by(model._meta.pk.name).iterator()
        for model in models
    )
    # One transaction, so every table is read as of the same moment while others write. On
    # SQLite that transaction holds the write lock (transaction_mode IMMEDIATE): the default
    # method, the backup API, does not.
    with transaction.atomic(using=using), path.open("w") as stream:
        connection = connections[using]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        serializers.serialize("json", rows, stream=stream, cls=_PreciseEncoder)


def _sqlite_files(connection: Any) -> set[Path]:
    """The live SQLite database's files, left out of the data folder's copy (the database is
    copied through the backup API instead)."""
    if connection.vendor != "sqlite":
        return set()
    name = str(connection.settings_dict["NAME"])
    if name.startswith("file:") or name == ":memory:":
        return set()
    base = Path(name).resolve()
    return {base, *(base.with_name(base.name + s) for s in ("-wal", "-shm", "-journal"))}


def _copy_tree(source: Path, target: Path, *, skip: set[Path]) -> tuple[int, int]:
    count = size = 0
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not source.is_dir():
        return 0, 0
    for path in sorted(source.rglob("*")):
        if path.is_symlink() or path.resolve() in skip or path.suffix == ".log":
            continue
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif path.is_file():
            destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copy2(path, destination)
            count += 1
            size += path.stat().st_size
    return count, size


def _key_warnings(keys: Path) -> list[str]:
    """Keys that come from the environment are not in the backup: say so."""
    warnings = []
    current = settings.BATCHWEB_ENCRYPTION_KEY.strip()
    saved = keys / "encryption_key"
    in_backup = saved.read_text().strip() if saved.is_file() else ""
    if current and current != in_backup:
        warnings.append(
            "The encryption key comes from BATCHWEB_ENCRYPTION_KEY, not a file, so it is not in "
            "the backup: keep it with the backup (e.g. in your password manager). Without it "
            "the API keys stored on connections cannot be read after a restore."
        )
    return warnings


# --- Restore --------------------------------------------------------------------------------


def backup_read(source: Path) -> dict[str, Any]:
    """The backup's manifest, checked. Raises BackupError."""
    try:
        manifest = json.loads((Path(source) / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(
            f"{source} holds no {MANIFEST}: not a backup, or one that did not finish."
        ) from None
    except ValueError:
        raise BackupError(f"{source}/{MANIFEST} cannot be read.") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source} was written in another backup format.")
    return manifest


def backup_restore(*, source: Path, using: str = "default") -> RestoreResult:
    """Replace the database, the data folder's files and the key files with the backup's."""
    source = Path(source).resolve()
    manifest = backup_read(source)
    connection = connections[using]
    method = manifest["database"]["method"]
    if manifest["database"].get("file") not in DATABASE_FILES.values():
        raise BackupError(f"{source}/{MANIFEST} names no database file this code writes.")
    database_file = source / manifest["database"]["file"]
    if not database_file.is_file():
        raise BackupError(f"{database_file} is missing from the backup.")
    in_backup = {tuple(m) for m in manifest["migrations"]}
    executor = MigrationExecutor(connection)
    unknown = in_backup - set(executor.loader.disk_migrations)
    if unknown:
        app, name = sorted(unknown)[0]
        raise BackupError(
            f"The backup was made by a newer release (it has migration {app}.{name}, which "
            "this code does not): restore it with that release."
        )
    result = RestoreResult(path=source, method=method)
    cache_generation = generations.read_or_zero(using)

    if method == "sqlite":
        if connection.vendor != "sqlite":
            raise BackupError(
                "This backup is of a SQLite database: restore it with DATABASE_URL pointing to "
                "SQLite, or back up again with --method json to move to another database."
            )
        _sqlite_restore(connection, database_file)
    elif method == "pg_dump":
        if connection.vendor != "postgresql":
            raise BackupError("This backup is of a PostgreSQL database (pg_dump).")
        if not (shutil.which("pg_restore") and shutil.which("psql")):
            raise BackupError(
                "pg_restore and psql are not installed: install PostgreSQL's client programs."
            )
        _pg_restore(connection, database_file)
    elif method == "json":
        _json_restore(connection, database_file, in_backup, using=using)
    else:
        raise BackupError(f"Unknown database method {method!r} in the manifest.")
    connection.close()
    ContentType.objects.clear_cache()
    # The restored database may bring back an older cache generation: pages cached since
    # must not be served as if they showed it (batches/cache/pages.py).
    generations.advance_past(cache_generation, using)

    live = {Path(getattr(settings, setting)).resolve() for setting in KEY_FILES.values()}
    result.files = _restore_data(
        source / "data", Path(settings.DATA_DIR), skip=live | _sqlite_files(connection)
    )
    for name, setting in KEY_FILES.items():
        saved = source / "keys" / name
        if saved.is_file():
            path = Path(getattr(settings, setting))
            path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only from the start, as `make run` writes them.
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(handle, "wb") as stream:
                stream.write(saved.read_bytes())
            path.chmod(0o600)
            result.keys.append(name)
    if "encryption_key" in result.keys and os.environ.get("BATCHWEB_ENCRYPTION_KEY"):
        saved = (source / "keys" / "encryption_key").read_text().strip()
        if os.environ["BATCHWEB_ENCRYPTION_KEY"].strip() != saved:
            result.warnings.append(
                "BATCHWEB_ENCRYPTION_KEY is set in the environment and wins over the restored "
                "key file: set it to the backup's key (keys/encryption_key), or the API keys "
                "stored on connections cannot be read."
            )
    result.migrate_needed = bool(set(executor.loader.disk_migrations) - in_backup)
    return result


def _sqlite_restore(connection: Any, path: Path) -> None:
    """Copy the backup into the live database through the same API, page by page."""
    connection.close()
    connection.ensure_connection()
    saved = sqlite3.connect(path)
    try:
        saved.execute("PRAGMA quick_check").fetchall()  # a damaged file fails here, not midway
        saved.backup(connection.connection)
    except sqlite3.DatabaseError as error:
        raise BackupError(f"The backup's database cannot be read: {error}.") from None
    finally:
        saved.close()


def _json_restore(connection: Any, path: Path, in_backup: set, *, using: str) -> None:
    """Bring the tables to the backup's migrations (a fresh database gets them all), empty
    them without the post-migrate rows (roles, default connection) and load every row."""
    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    targets = []
    for app in sorted({app for app, _ in in_backup}):
        known = [node for node in in_backup if node[0] == app and node in graph.nodes]
        if known:  # the app's newest migration in the backup: the one with the longest past
            targets.append(max(known, key=lambda node: len(graph.forwards_plan(node))))
    executor.migrate(targets)
    call_command("flush", interactive=False, inhibit_post_migrate=True, database=using, verbosity=0)
    call_command("loaddata", str(path), database=using, verbosity=0)


def _restore_data(source: Path, data_dir: Path, *, skip: set[Path]) -> int:
    """Copy the backup's data/ back, each file to the same place under data/ and nowhere else
    (storage.restored_path). A link in the backup is not followed (it could copy any file of
    the server into data/), and the live database and key files are not replaced from it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in OWNED_FOLDERS:
        shutil.rmtree(data_dir / name, ignore_errors=True)
    count = 0
    if not source.is_dir():
        return 0
    for path in sorted(source.rglob("*")):
        if path.is_symlink():
            continue
        try:
            destination = storage.restored_path(path.relative_to(source))
        except storage.UnsafePath:
            continue
        if destination in skip:
            continue
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
            count += 1
    return count


# --- PostgreSQL's programs ------------------------------------------------------------------


def _pg_env(connection: Any) -> dict[str, str]:
    """The connection's parameters for PostgreSQL's programs. The password goes in the
    environment, never on the command line (where `ps` shows it) or in a message."""
    params = connection.settings_dict
    env = {**os.environ}
    for key, name in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"),
                      ("PASSWORD", "PGPASSWORD"), ("NAME", "PGDATABASE")):  # fmt: skip
        if params.get(key):
            env[name] = str(params[key])
    options = params.get("OPTIONS") or {}
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
        if options.get(key):
            env[f"PG{key.upper()}"] = str(options[key])
    return env


def _failure(program: str, code: int, stderr: str) -> BackupError:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return BackupError(f"{program} failed: {lines[-1] if lines else f'exit status {code}'}")


def _run(command: list[str], connection: Any) -> None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed programs, arguments of our own
            command, env=_pg_env(connection), capture_output=True, text=True, check=False
        )
    except OSError as error:
        raise BackupError(f"{command[0]} could not be started: {error.strerror}.") from None
    if done.returncode != 0:
        raise _failure(command[0], done.returncode, done.stderr)


def _pg_restore(connection: Any, dump: Path) -> None:
    """Replace every table with the dump's in one transaction: psql drops the tables there now
    (a newer migration's too) and runs the script pg_restore makes of the dump, and commits only
    when both went through. If anything fails, nothing changed."""
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    connection.close()
    env = _pg_env(connection)
    start = "BEGIN;\n"
    if tables:
        names = ", ".join(connection.ops.quote_name(t) for t in tables)
        start += f"DROP TABLE IF EXISTS {names} CASCADE;\n"
    psql_command = [shutil.which("psql") or "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    script_command = [
        shutil.which("pg_restore") or "pg_restore",
        "--no-owner",
        "--no-privileges",
        "--file=-",
    ]
    with tempfile.TemporaryFile() as psql_errors, tempfile.TemporaryFile() as script_errors:
        psql = subprocess.Popen(  # noqa: S603 - fixed programs, arguments of our own
            psql_command,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=psql_errors,
        )
        script = subprocess.Popen(  # noqa: S603
            [*script_command, str(dump)], env=env, stdout=subprocess.PIPE, stderr=script_errors
        )
        # A broken pipe: psql stopped at an error, which its own message names.
        with contextlib.suppress(BrokenPipeError):
            psql.stdin.write(start.encode())
            shutil.copyfileobj(script.stdout, psql.stdin)
        script.stdout.close()
        script_code = script.wait()
        with contextlib.suppress(BrokenPipeError):
            if script_code == 0:
                psql.stdin.write(b"COMMIT;\n")
            psql.stdin.close()  # without COMMIT, psql ends by rolling back
        psql_code = psql.wait()
        for program, code, errors in (
            ("pg_restore", script_code, script_errors),
            ("psql", psql_code, psql_errors),
        ):
            if code != 0:
                errors.seek(0)
                raise _failure(program, code, errors.read().decode(errors="replace"))


__all__ = [
    "BackupError",
    "BackupResult",
    "RestoreResult",
    "backup_create",
    "backup_read",
    "backup_restore",
]
