import json

from django.urls import reverse

from batches import services
from batches.models import Batch, ResultRow
from tests.integration.conftest import chat_line


def test_a_finished_batch_can_be_read_exported_downloaded_and_retried(
    sim, submitter_client, submitter, tmp_path, settings
):
    settings.DATA_DIR = tmp_path
    lines = [chat_line(f"req-{i}") for i in range(1, 6)] + [chat_line("req-6-fail")]
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps(line) + "\n" for line in lines))
    client = services.get_client()
    with p.open("rb") as f:
        fid = client.upload_file(fileobj=f, filename="in.jsonl")["id"]
    b = services.batch_create(user=submitter, input_file_id=fid, endpoint="/v1/chat/completions")
    sim.advance(100)
    b = services.batch_refresh(batch=b)
    assert b.status == "completed", b.status
    r = submitter_client.get(reverse("batch-results", args=[b.openai_id]))
    assert r.status_code == 200, r
    c = r.content.decode()
    assert "req-6-fail" in c
    assert ResultRow.objects.filter(batch=b).count() == 6
    b.refresh_from_db()
    assert b.result_summary["succeeded"] == 5, b.result_summary
    r = submitter_client.get(reverse("batch-detail", args=[b.openai_id]))
    assert "What the batch produced" in r.content.decode()
    row = ResultRow.objects.get(batch=b, custom_id="req-6-fail")
    r = submitter_client.get(reverse("batch-result", args=[b.openai_id, row.pk]))
    assert r.status_code == 200
    r = submitter_client.get(reverse("batch-results", args=[b.openai_id]) + "?failed=1")
    assert "req-1" not in r.content.decode().replace("req-6-fail", "")
    r = submitter_client.get(reverse("batch-results-csv", args=[b.openai_id]))
    body = b"".join(r.streaming_content).decode()
    assert body.count("\n") == 7, body
    r = submitter_client.get(reverse("batch-download", args=[b.openai_id, "output"]))
    out = b"".join(r.streaming_content)
    assert out.count(b"\n") == 5
    r = submitter_client.post(reverse("batch-retry", args=[b.openai_id]))
    assert r.status_code == 302, r.content
    r = submitter_client.get(r["Location"])
    c = r.content.decode()
    assert "1" in c and "Retry of" in c, c
    r = submitter_client.post(r.request["PATH_INFO"])
    assert r.status_code == 302, r.content.decode()[:2000]
    nb = Batch.objects.get(retry_of=b)
    assert nb.input_lines == 1
    r = submitter_client.get(reverse("batch-export"))
    assert b"batch_id" in b"".join(r.streaming_content)
