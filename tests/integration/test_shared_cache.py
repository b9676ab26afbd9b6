"""A cache shared by several web processes (CACHE_URL=redis://..., issue 20): a real Redis, and
two gunicorn processes on one database sharing it.

Redis is the one on 127.0.0.1:6379 when it answers, else one started here (`redis-server` on a
free loopback port). Without either the tests are skipped with the reason; CI sets
BATCHWEB_REQUIRE_REDIS=1, which turns the skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import Group, User
from django.core.cache import caches

from batches.models import Batch, Connection, default_connection
from batches.services.batches import batch_upsert
from batchweb.version import code_version
from tests.conftest import make_batch

ROOT = Path(__file__).resolve().parent.parent.parent
DB = 13  # a Redis database of its own, emptied before and after
PASSWORD = "shared-cache-pw-123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    try:
        import redis  # noqa: F401
    except ImportError:
        reason = "the redis client is not installed"
    else:
        reason = ""
    started = None
    port = 6379
    if not reason and not _answers(port):
        server = shutil.which("redis-server")
        if server is None:
            reason = "no Redis on 127.0.0.1:6379 and no redis-server to start one"
        else:
            port = free_port()
            started = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(50):
                if _answers(port):
                    break
                time.sleep(0.1)
            else:
                reason = "redis-server did not answer within 5 s"
    if reason:
        if os.environ.get("BATCHWEB_REQUIRE_REDIS") == "1":
            pytest.fail(f"{reason} (BATCHWEB_REQUIRE_REDIS=1)")
        pytest.skip(f"{reason}; shared cache tests skipped")
    url = f"redis://127.0.0.1:{port}/{DB}"
    _flush(url)
    try:
        yield url
    finally:
        _flush(url)
        if started is not None:
            started.terminate()
            started.wait(timeout=10)


def _flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def _keys(url: str) -> list[bytes]:
    import redis

    return list(redis.Redis.from_url(url).scan_iter(count=1000))


def _values(url: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(url)
    return [client.get(key) or b"" for key in client.scan_iter(count=1000)]


@pytest.fixture
def shared(settings, redis_url) -> str:
    """This test process's caches on Redis, as CACHE_URL makes them (batchweb/settings.py)."""
    from batchweb import settings as project

    settings.CACHES = {
        **{
            alias: {
                "BACKEND": "batchweb.cache.ForgivingRedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": f"batchweb-{alias}-{code_version()}",
                "TIMEOUT": project.CACHES[alias]["TIMEOUT"],
            }
            for alias in ("default", "rows", "pages")
        },
        "people": project.CACHES["people"],
    }
    _flush(redis_url)
    return redis_url


# --- In this process, on Redis ------------------------------------------------------------------


@pytest.mark.django_db
def test_settings_put_rows_and_pages_on_the_cache_url_and_people_in_the_process(monkeypatch):
    import importlib

    from batchweb import settings as project

    monkeypatch.setenv("CACHE_URL", "redis://127.0.0.1:6379/3")
    try:
        reloaded = importlib.reload(project)
        for alias in ("default", "rows", "pages"):
            made = reloaded.CACHES[alias]
            assert made["BACKEND"] == "batchweb.cache.ForgivingRedisCache"
            assert made["LOCATION"] == "redis://127.0.0.1:6379/3"
            assert made["KEY_PREFIX"] == f"batchweb-{alias}-{code_version()}"
        assert reloaded.CACHES["people"]["BACKEND"].endswith("LocMemCache")
    finally:
        monkeypatch.delenv("CACHE_URL")
        importlib.reload(project)


@pytest.mark.django_db
def test_a_page_kept_on_redis_is_served_and_a_write_shows_at_once(shared, viewer_client):
    batch_upsert(
        payload=make_batch(id="batch_shared1", status="completed", metadata={"job": "one"})
    )

    first = viewer_client.get("/")
    assert "batch_shared1" in first.text
    kept = [k for k in _keys(shared) if b":page:" in k]
    assert kept, _keys(shared)
    assert all(k.startswith(f"batchweb-pages-{code_version()}".encode()) for k in kept)

    batch_upsert(
        payload=make_batch(id="batch_shared2", status="completed", metadata={"job": "two"})
    )

    assert "batch_shared2" in viewer_client.get("/").text


@pytest.mark.django_db
def test_no_account_nor_password_hash_is_written_to_the_shared_cache(shared, client):
    user = User.objects.create_user("sharer", password=PASSWORD)
    user.groups.add(Group.objects.get(name="Viewers"))
    batch_upsert(payload=make_batch(id="batch_shared3", status="completed"))
    client.force_login(user, backend="batches.services.signin.PasswordBackend")
    caches["people"].clear()

    for _ in range(2):
        assert client.get("/").status_code == 200

    values = b"".join(_values(shared))
    assert user.password.encode() not in values
    assert not [k for k in _keys(shared) if b":user:" in k or b":perms:" in k or b":access:" in k]
    kept_here = list(caches["people"]._cache)  # LocMemCache: this process's own
    assert any(":user:" in key for key in kept_here), kept_here


# --- Two web processes sharing it ---------------------------------------------------------------


def _csrf(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def _sign_in(base: str, username: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/accounts/login/", timeout=10)
    signed = session.post(
        f"{base}/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": _csrf(page.text)},
        timeout=10,
    )
    assert signed.status_code == 200 and username in signed.text, signed.text[:500]
    return session


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True
    )


SEED = f"""
from django.contrib.auth.models import Group, User
from batches.models import Connection, default_connection
from batches.services.batches import batch_upsert
from tests.conftest import make_batch
research = Connection.objects.create(name="Research", slug="research",
    base_url="https://research.example.test/v1", key_env="RESEARCH_KEY")
research.groups.add(Group.objects.create(name="Research"))
for name, groups in (("olga", ["Operators", "Research"]), ("vera", ["Viewers"])):
    user = User.objects.create_user(name, password="{PASSWORD}")
    user.groups.add(*Group.objects.filter(name__in=groups))
batch_upsert(payload=make_batch(id="batch_open", status="completed", metadata={{"job": "first"}}),
    connection=default_connection())
batch_upsert(payload=make_batch(id="batch_secret", status="completed",
    metadata={{"job": "classified"}}), connection=research)
"""


@pytest.fixture
def two_servers(redis_url, tmp_path) -> Iterator[tuple[str, str]]:
    """Two gunicorn processes (one worker each) on one SQLite database, sharing Redis."""
    _flush(redis_url)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "DJANGO_", "BATCHWEB_", "DATABASE_", "CACHE_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "batchweb.settings",
            "DJANGO_SECRET_KEY": "shared-cache-test-only-not-a-secret-" + "x" * 32,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_SECURE_COOKIES": "false",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "BATCHWEB_DATA_DIR": str(tmp_path),
            "OPENAI_API_KEY": "sk-shared-cache-test",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # never asked: the pages read the cache
            "CACHE_URL": redis_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    _manage(env, "migrate", "--no-input")
    _manage(env, "shell", "-c", SEED)
    servers, bases = [], []
    for _ in range(2):
        port = free_port()
        log = (tmp_path / f"gunicorn-{port}.log").open("w")
        servers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "batchweb.wsgi",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "1",
                    "--no-control-socket",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for base in bases:
            for _ in range(150):
                try:
                    requests.get(f"{base}/healthz", timeout=2)
                    break
                except requests.RequestException:
                    time.sleep(0.1)
            else:
                raise AssertionError(f"gunicorn at {base} did not answer in 15 s")
        yield bases[0], bases[1]
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
        _flush(redis_url)


def test_a_write_through_one_server_is_seen_through_the_other_at_once(two_servers, redis_url):
    one, two = two_servers
    olga_one, olga_two = _sign_in(one, "olga"), _sign_in(two, "olga")
    assert "first" in olga_one.get(f"{one}/", timeout=10).text  # drawn by one, kept in Redis
    assert [k for k in _keys(redis_url) if b":page:" in k]
    assert "first" in olga_two.get(f"{two}/", timeout=10).text

    detail = olga_two.get(f"{two}/connections/default/batches/batch_open/", timeout=10)
    changed = olga_two.post(
        f"{two}/connections/default/batches/batch_open/label/",
        data={"label": "renamed", "csrfmiddlewaretoken": _csrf(detail.text)},
        timeout=10,
    )
    assert changed.status_code == 200 and "Label set to" in changed.text

    listed = olga_one.get(f"{one}/", timeout=10).text
    assert "renamed" in listed


def test_a_person_never_gets_another_persons_page(two_servers):
    one, two = two_servers
    olga, vera = _sign_in(one, "olga"), _sign_in(two, "vera")

    for _ in range(2):  # drawn, then from the shared cache
        for session, base in ((olga, one), (vera, two), (olga, two), (vera, one)):
            page = session.get(f"{base}/", timeout=10).text
            mine = "olga" if session is olga else "vera"
            other = "vera" if mine == "olga" else "olga"
            who = re.search(r'<a class="who"[^>]*>([^<]+)</a>', page).group(1)
            assert who == mine and other not in who
            assert ("classified" in page) == (mine == "olga")


@pytest.mark.django_db
def test_a_write_to_one_connection_keeps_the_pages_of_another(shared, client):
    research = Connection.objects.create(
        name="Research", slug="research", base_url="https://r.example.test/v1"
    )
    batch_upsert(payload=make_batch(id="batch_q1", status="completed"))
    batch_upsert(payload=make_batch(id="batch_r1", status="completed"), connection=research)
    admin = User.objects.create_superuser("root-shared", password=PASSWORD)
    client.force_login(admin)
    url = "/connections/default/batches/batch_q1/"
    assert client.get(url).status_code == 200
    pages_before = {k for k in _keys(shared) if b":page:" in k}

    batch_upsert(payload=make_batch(id="batch_r1", status="completed", metadata={"job": "x"}),
                 connection=research)  # fmt: skip
    assert client.get(url).status_code == 200

    assert {k for k in _keys(shared) if b":page:" in k} == pages_before  # served, not drawn
    assert Batch.objects.get(openai_id="batch_r1").label == "x"
    assert default_connection().pk != research.pk


@pytest.mark.django_db
def test_with_redis_unreachable_pages_are_drawn_afresh_and_said_in_the_log(
    settings, viewer_client, caplog
):
    """A cache holds only copies: without it every page is drawn, never a 500."""
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # a port nothing listens on
    settings.CACHES = {
        **settings.CACHES,
        "pages": {"BACKEND": "batchweb.cache.ForgivingRedisCache", "LOCATION": nobody},
        "rows": {"BACKEND": "batchweb.cache.ForgivingRedisCache", "LOCATION": nobody},
    }
    import batchweb.cache

    batchweb.cache._last_warning = 0.0
    batch_upsert(payload=make_batch(id="batch_no_redis", status="completed"))

    for _ in range(2):
        response = viewer_client.get("/")
        assert response.status_code == 200 and "batch_no_redis" in response.text

    warned = [r for r in caplog.records if r.name == "batchweb.cache"]
    assert len(warned) == 1 and "could not be reached" in warned[0].getMessage()
