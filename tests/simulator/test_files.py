"""The Files endpoints: multipart upload, retrieve, streamed content, list, delete, expiry."""

from __future__ import annotations

import io
from wsgiref.util import setup_testing_defaults

import pytest

from simulator import Simulator, SimulatorApp
from simulator.multipart import MultipartError, parse_multipart
from tests.simulator.conftest import START, Api, chat_request, jsonl


def test_it_uploads_retrieves_downloads_and_deletes_a_file(api: Api) -> None:
    content = jsonl([chat_request("a"), chat_request("b")])
    uploaded = api.upload(content)
    assert uploaded["id"].startswith("file-")
    assert uploaded["object"] == "file"
    assert uploaded["bytes"] == len(content)
    assert uploaded["created_at"] == START
    assert uploaded["purpose"] == "batch"
    assert uploaded["filename"] == "input.jsonl"
    assert uploaded["expires_at"] == START + 30 * 24 * 3600, "batch inputs expire in 30 days"

    assert api.call("GET", f"/files/{uploaded['id']}") == uploaded
    response = api.request("GET", f"/files/{uploaded['id']}/content")
    assert response.headers["Content-Length"] == str(len(content))
    assert api.content(uploaded["id"]) == content

    deleted = api.call("DELETE", f"/files/{uploaded['id']}")
    assert deleted == {"id": uploaded["id"], "object": "file", "deleted": True}
    api.error("GET", f"/files/{uploaded['id']}", 404)
    api.error("GET", f"/files/{uploaded['id']}/content", 404)


def test_a_big_upload_is_spooled_to_disk_and_streamed_back(api: Api, sim: Simulator) -> None:
    line = jsonl([chat_request("x" * 40, "y" * 2000)])
    content = line * (3 * 1024 * 1024 // len(line))
    uploaded = api.upload(content)
    assert uploaded["bytes"] == len(content)
    assert (sim.storage_dir / uploaded["id"]).stat().st_size == len(content)
    assert api.content(uploaded["id"]) == content

    # The WSGI answer is an iterator of 64 KiB chunks, never the whole file at once.
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/v1/files/{uploaded['id']}/content",
        "HTTP_AUTHORIZATION": "Bearer sk-test",
    }
    setup_testing_defaults(environ)
    started = []
    body = SimulatorApp(sim)(environ, lambda status, headers: started.append(status))
    assert started == ["200 OK"]
    sizes = [len(piece) for piece in body]
    assert max(sizes) == 64 * 1024
    assert sum(sizes) == len(content)


def test_upload_takes_expires_after(api: Api) -> None:
    uploaded = api.upload(
        b"{}\n",
        purpose="user_data",
        **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
    )
    assert uploaded["expires_at"] == START + 3600
    api.advance(3599)
    api.call("GET", f"/files/{uploaded['id']}")
    api.advance(1)
    api.error("GET", f"/files/{uploaded['id']}", 404)


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ({"file": ("a.jsonl", b"{}")}, {"purpose": "nonsense"}, "purpose"),
        ({"file": ("a.jsonl", b"{}")}, {}, "purpose"),
        (None, {"purpose": "batch"}, "file"),
        ({"file": ("a.jsonl", b"{}")}, {"purpose": "batch", "colour": "red"}, "colour"),
        (
            {"file": ("a.jsonl", b"{}")},
            {"purpose": "batch", "expires_after[anchor]": "now", "expires_after[seconds]": "60"},
            "expires_after",
        ),
    ],
)
def test_a_bad_upload_is_a_400(api: Api, files: dict | None, data: dict, param: str) -> None:
    if files is None:  # still multipart, with no file part
        files = {"purpose": (None, data.pop("purpose"))}
    error = api.error("POST", "/files", 400, files=files, data=data)
    assert error["param"] == param


def test_an_upload_that_is_not_multipart_is_a_400(api: Api) -> None:
    error = api.error("POST", "/files", 400, json={"purpose": "batch"})
    assert "multipart" in error["message"]


def test_the_file_list_filters_orders_and_pages(api: Api) -> None:
    ids = []
    for purpose in ("batch", "user_data", "batch"):
        ids.append(api.upload(b"{}\n", purpose=purpose)["id"])
        api.advance(1)
    newest_first = api.call("GET", "/files")
    assert [f["id"] for f in newest_first["data"]] == ids[::-1]
    assert newest_first["has_more"] is False
    assert newest_first["first_id"] == ids[2] and newest_first["last_id"] == ids[0]

    batches_only = api.call("GET", "/files?purpose=batch&order=asc")
    assert [f["id"] for f in batches_only["data"]] == [ids[0], ids[2]]

    first = api.call("GET", "/files?limit=2")
    assert [f["id"] for f in first["data"]] == [ids[2], ids[1]] and first["has_more"]
    second = api.call("GET", f"/files?limit=2&after={first['last_id']}")
    assert [f["id"] for f in second["data"]] == [ids[0]] and not second["has_more"]


class Trickle(io.RawIOBase):
    """A stream that hands out a few bytes per read, to split the boundary every which way."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.at = data, step, 0

    def read(self, size: int = -1, /) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        piece = self.data[self.at : self.at + size]
        self.at += len(piece)
        return piece


@pytest.mark.parametrize("step", [1, 3, 7, 64, 100_000])
def test_the_multipart_parser_handles_any_read_size(tmp_path, step: int) -> None:
    # Near-misses of the delimiter ("\r\n--xyzzy") inside the data must stay data.
    payload = b"line one\r\n--xyzz\r\nmid--xyzzy\r\n\r\n-\r\n" * 50 + b"\r"
    body = (
        b"preamble\r\n--xyzzy\r\n"
        b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"--xyzzy\r\n"
        b'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\n" + payload + b"\r\n--xyzzy--\r\nepilogue"
    )
    form = parse_multipart(Trickle(body, step), "multipart/form-data; boundary=xyzzy", tmp_path)
    assert form.fields == {"purpose": "batch"}
    upload = form.files["file"]
    assert upload.filename == "in.jsonl"
    assert upload.content_type == "application/jsonl"
    assert upload.path.read_bytes() == payload
    assert upload.size == len(payload)


def test_a_truncated_multipart_body_leaves_no_temporary_file(tmp_path) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\nabc'
    with pytest.raises(MultipartError):
        parse_multipart(io.BytesIO(body), "multipart/form-data; boundary=b", tmp_path)
    assert list(tmp_path.iterdir()) == []
