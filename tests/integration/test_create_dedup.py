"""A create whose answer is lost (a read timeout, a 500) may or may not have made a batch
upstream; the service looks for its submission token before reporting a failure, so one form
makes exactly one batch."""

from __future__ import annotations

from typing import Any

import pytest

from batches.models import Batch, Event
from batches.openai_client import OpenAIClient, OpenAIError, UpstreamUnavailable
from batches.services import batches as batch_services
from tests.integration.conftest import calls, wait_until

pytestmark = pytest.mark.django_db

ENDPOINT = "/v1/chat/completions"


class SlowCreateClient(OpenAIClient):
    """Only the create call meets the latency: the simulator sleeps before it acts, so the client
    times out first and the batch is created anyway a moment later. Every other call is fast."""

    sim: Any
    latency = 1.0
    errors: list[OpenAIError]

    def create_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.sim.set_faults({"latency": self.latency})
        try:
            return super().create_batch(**kwargs)
        except OpenAIError as error:
            self.errors.append(error)
            raise
        finally:
            self.sim.set_faults({"latency": 0})
            # The request is still being served: let it land before anyone looks for it.
            assert wait_until(lambda: self.sim.state()["batches"] >= 1, timeout=5)


@pytest.fixture
def slow_create_client(sim, make_client) -> SlowCreateClient:
    plain = make_client(read_timeout=0.3)
    client = SlowCreateClient(plain.config, sleep=plain.sleep)
    client.sim, client.errors = sim, []
    return client


def test_a_create_that_timed_out_but_happened_upstream_is_found_by_its_token(
    sim, submitter, uploaded_file_id, slow_create_client
):
    batch = batch_services.batch_create(
        user=submitter,
        input_file_id=uploaded_file_id,
        endpoint=ENDPOINT,
        submission_token="tok-ambiguous-1",
        client=slow_create_client,
    )

    [error] = slow_create_client.errors
    assert isinstance(error, UpstreamUnavailable) and error.ambiguous
    listed = slow_create_client.list_batches(limit=100)["data"]
    assert [b["id"] for b in listed] == [batch.openai_id]  # exactly one batch upstream
    assert listed[0]["metadata"]["batchweb_token"] == "tok-ambiguous-1"
    assert calls(sim, "createBatch") == 1  # found, not created again
    assert batch.submission_token == "tok-ambiguous-1"
    assert batch.created_by == submitter
    assert list(Event.objects.values_list("action", flat=True)) == [Event.Action.CREATE]

    again = batch_services.batch_create(
        user=submitter,
        input_file_id=uploaded_file_id,
        endpoint=ENDPOINT,
        submission_token="tok-ambiguous-1",
        client=slow_create_client,
    )

    assert again.pk == batch.pk
    assert calls(sim, "createBatch") == 1
    assert Batch.objects.count() == 1


def test_a_create_that_failed_before_anything_happened_is_reported_and_can_be_retried(
    sim, submitter, uploaded_file_id, make_client
):
    sim.set_faults({"server_error": 1})  # a faulted request does nothing upstream
    client = make_client()

    with pytest.raises(UpstreamUnavailable):
        batch_services.batch_create(
            user=submitter,
            input_file_id=uploaded_file_id,
            endpoint=ENDPOINT,
            submission_token="tok-ambiguous-2",
            client=client,
        )

    assert sim.state()["batches"] == 0
    assert calls(sim, "listBatches") == 1  # the token was looked for before giving up
    assert Event.objects.filter(action=Event.Action.CREATE_FAILED).count() == 1
    assert not Batch.objects.exists()

    batch = batch_services.batch_create(
        user=submitter,
        input_file_id=uploaded_file_id,
        endpoint=ENDPOINT,
        submission_token="tok-ambiguous-2",
        client=client,
    )

    assert sim.state()["batches"] == 1
    assert batch.submission_token == "tok-ambiguous-2"
    assert calls(sim, "createBatch") == 2
