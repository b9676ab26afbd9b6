"""Submitting a batch: check the input file, keep it until the person confirms, upload it
streamed from disk, create the batch — at most once per form, and nothing lost on the way.

A `Submission` row carries one create form from start to end, keyed by the form's one-time
token. Its state moves checked → pending → done (or failed, from which it can be tried again).
Once the input file is uploaded its file id is kept, so trying again never uploads twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from typing import Any, BinaryIO

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import storage
from ..errors import ServiceError
from ..jsonl_check import CheckReport, check_jsonl
from ..models import Batch, Connection, Event, Submission
from ..openai_client import OpenAIClient, OpenAIError
from .batches import InputFacts, batch_create
from .connections import get_client

logger = logging.getLogger(__name__)

# A checked file that nobody confirmed is removed after this long.
STAGED_LIFETIME = dt.timedelta(hours=24)


class AlreadySubmitted(Exception):
    """The form's token was used before; `submission` says how that went."""

    def __init__(self, submission: Submission) -> None:
        self.submission = submission
        super().__init__(f"submission {submission.token} is {submission.state}")


class SubmissionTokenTaken(ServiceError):
    """The form's token is another person's submission: theirs is left as it is."""

    def __init__(self) -> None:
        super().__init__(
            "This form has expired or was damaged. Reload the page and submit it again."
        )


class StagingQuotaExceeded(ServiceError):
    """The person's checked files waiting for confirmation would pass the staging quota."""


def submission_find(*, token: str, user: Any, others: bool = False) -> Submission | None:
    """A submission by its token *and* its owner: knowing another person's token finds nothing
    (the views answer 404, so a token reveals nothing either). `others`: another person's
    too, for looking (a superuser) or stopping a wait (an operator); nothing that replaces or
    submits a submission passes it."""
    found = Submission.objects.select_related("batch", "connection").filter(token=token)
    if not others:
        found = found.filter(user_id=getattr(user, "pk", None) or -1)
    return found.first()


def staged_bytes(*, user: Any, exclude_token: str = "") -> int:
    """The bytes of the person's checked files still waiting on the server (their staging
    quota's use); a form sent again (`exclude_token`) replaces its own file."""
    paths = (
        Submission.objects.filter(user_id=getattr(user, "pk", None) or -1)
        .exclude(staged_path="")
        .exclude(token=exclude_token)
        .values_list("staged_path", flat=True)
    )
    total = 0
    for value in paths:
        path = storage.stored_path("staging", value)
        if path is not None and path.is_file():
            total += path.stat().st_size
    return total


def staging_quota_check(*, user: Any, adding: int, token: str = "") -> None:
    """Raise StagingQuotaExceeded when keeping `adding` more bytes for the person would pass
    BATCHWEB_STAGING_QUOTA_MB."""
    quota = int(settings.STAGING_QUOTA_MB) * 1024 * 1024
    used = staged_bytes(user=user, exclude_token=token)
    if used + adding <= quota:
        return
    raise StagingQuotaExceeded(
        f"The file was not kept: your checked files waiting for confirmation take "
        f"{_mb(used)}, and this one {_mb(adding)}, past the {settings.STAGING_QUOTA_MB:,} MB "
        "each person may keep waiting on the server. Confirm the ones waiting, or try again "
        f"once they are removed ({_hours(STAGED_LIFETIME)} hours after they were checked)."
    )


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):,.1f} MB"


def _hours(delta: dt.timedelta) -> int:
    return int(delta.total_seconds() // 3600)


def check_limits(connection: Connection) -> dict[str, Any]:
    """The checker's limits for files sent through a connection (Azure allows 100,000
    requests, and its lines must name one of its deployments)."""
    return {
        "max_requests": connection.request_limit(),
        "max_bytes": connection.byte_limit(),
        "allowed_endpoints": connection.endpoints(),
        "known_models": connection.deployment_names(),
    }


def submission_check_file(
    *,
    user: Any,
    token: str,
    connection: Connection,
    stream: BinaryIO,
    filename: str,
    endpoint: str | None,
    request: dict[str, Any],
    temporary_path: str | None = None,
    retry_of: Batch | None = None,
) -> tuple[Submission | None, CheckReport]:
    """Check an input file in one streaming pass. A valid file is kept on disk under a checked
    submission, waiting for the person to confirm; an invalid one is dropped.

    `temporary_path` is where the web server already spooled the upload, so a valid file is
    moved rather than copied.
    """
    report = check_jsonl(stream, endpoint=endpoint or None, **check_limits(connection))
    if not report.ok:
        return None, report
    staging_quota_check(user=user, adding=report.bytes, token=token)
    # A name the server makes, nothing of the request in it; a new one for each check: the
    # same form sent again (a double click, back and submit) must not replace or remove a
    # file another request is uploading.
    staged = storage.data_path("staging", storage.new_name())
    if temporary_path:
        shutil.move(temporary_path, staged)
    else:
        stream.seek(0)
        with staged.open("wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
    try:
        submission = submission_stage(
            user=user,
            token=token,
            connection=connection,
            request={**request, "endpoint": report.endpoint},
            staged_path=str(staged),
            filename=filename[:255],
            facts=report_facts(report),
            uploaded_file_id="",
            retry_of=retry_of,
        )
    except (AlreadySubmitted, SubmissionTokenTaken):
        staged.unlink(missing_ok=True)
        raise
    return submission, report


def submission_for_file_id(
    *,
    user: Any,
    token: str,
    connection: Connection,
    input_file_id: str,
    request: dict[str, Any],
) -> Submission:
    """A submission for a file that is already uploaded: nothing to check or upload."""
    return submission_stage(
        user=user,
        token=token,
        connection=connection,
        request=request,
        staged_path="",
        filename="",
        facts=None,
        uploaded_file_id=input_file_id,
        retry_of=None,
    )


def report_facts(report: CheckReport) -> dict[str, Any]:
    """What the confirm page shows of a checked file, and what the batch keeps of it."""
    return {
        "lines": report.lines,
        "bytes": report.bytes,
        "model": report.model or "",
        "endpoint": report.endpoint or "",
        "estimated_input_tokens": report.estimated_input_tokens,
        "embedding_inputs": report.embedding_inputs,
        "max_output_tokens": report.max_output_tokens,
        "lines_without_max": report.lines_without_max,
    }


def submission_stage(*, user: Any, token: str, **fields: Any) -> Submission:
    """Record what the form asked for under its token. A form sent again after a failure (or
    before confirming) replaces what it asked for; one being submitted or done is refused.
    A token that is another person's submission raises SubmissionTokenTaken and leaves it as
    it is (whoever asks: an admin replaces nobody's either)."""
    with transaction.atomic():
        submission = Submission.objects.select_for_update().filter(token=token).first()
        if submission is None:
            try:
                with transaction.atomic():
                    return Submission.objects.create(
                        token=token, user=user, state=Submission.State.CHECKED, **fields
                    )
            except IntegrityError:
                submission = Submission.objects.select_for_update().get(token=token)
        if submission.user_id is None or submission.user_id != getattr(user, "pk", None):
            raise SubmissionTokenTaken()
        if submission.state in (Submission.State.PENDING, Submission.State.DONE):
            raise AlreadySubmitted(submission)
        if submission.staged_path and submission.staged_path != fields["staged_path"]:
            _remove_staged(submission.staged_path)
        for name, value in fields.items():
            setattr(submission, name, value)
        submission.save()
        return submission


def submission_submit(
    *, submission: Submission, user: Any, client: OpenAIClient | None = None
) -> Batch:
    """Upload the staged file (once) and create the batch (once). Raises AlreadySubmitted when
    another request holds or finished this submission, and the client's errors on failure, with
    the submission left "failed" and ready to be tried again."""
    tried_before = bool(submission.error)
    claimed = Submission.objects.filter(
        pk=submission.pk, state__in=[Submission.State.CHECKED, Submission.State.FAILED]
    ).update(state=Submission.State.PENDING, updated_at=timezone.now())
    submission.refresh_from_db()
    if not claimed:
        raise AlreadySubmitted(submission)
    client = client or get_client(connection=submission.connection)
    request = submission.request or {}
    try:
        if not submission.uploaded_file_id:
            submission.uploaded_file_id = _upload(submission, client, user)
            submission.save(update_fields=["uploaded_file_id", "updated_at"])
        facts = submission.facts or {}
        batch = batch_create(
            user=user,
            connection=submission.connection,
            input_file_id=submission.uploaded_file_id,
            endpoint=request["endpoint"],
            completion_window=request.get("completion_window") or "24h",
            metadata=request.get("metadata") or {},
            output_expires_after_seconds=request.get("output_expires_after_seconds"),
            submission_token=submission.token,
            client=client,
            retry_of=submission.retry_of,
            # An earlier attempt may have created the batch after all (a timeout): look first.
            reconcile_first=tried_before,
            input_facts=InputFacts(
                filename=submission.filename,
                bytes=facts.get("bytes") or 0,
                lines=facts.get("lines") or 0,
                model=facts.get("model") or "",
            )
            if submission.filename
            else None,
        )
    except (OpenAIError, ServiceError) as error:
        submission.state = Submission.State.FAILED
        submission.error = str(error)
        submission.save(update_fields=["state", "error", "updated_at"])
        raise
    except BaseException:
        # A bug or a stopped process: let the person try again rather than block the form.
        Submission.objects.filter(pk=submission.pk).update(
            state=Submission.State.FAILED, error="interrupted"
        )
        raise
    submission.state = Submission.State.DONE
    submission.batch = batch
    submission.error = ""
    _unstage(submission)
    submission.save()
    return batch


def _upload(submission: Submission, client: OpenAIClient, user: Any) -> str:
    path = storage.stored_path("staging", submission.staged_path)
    if path is None or not path.is_file():
        raise ServiceError(
            "The checked file is no longer on the server (it is kept for 24 hours). "
            "Choose the file again."
        )
    try:
        with path.open("rb") as stream:
            uploaded = client.upload_file(
                fileobj=stream, filename=submission.filename, purpose="batch"
            )
    except OpenAIError as error:
        Event.record(
            Event.Action.UPLOAD_FAILED,
            user=user,
            connection=submission.connection,
            target=submission.filename,
            error=error,
        )
        raise
    Event.record(
        Event.Action.UPLOAD,
        user=user,
        connection=submission.connection,
        target=submission.filename,
        detail=f"{submission.filename} as {uploaded['id']} ({path.stat().st_size} bytes)",
    )
    return str(uploaded["id"])


def _unstage(submission: Submission) -> None:
    if submission.staged_path:
        _remove_staged(submission.staged_path)
        submission.staged_path = ""


def _remove_staged(value: str) -> None:
    """Remove a staged file named by a stored path: only when it is one of staging/ (a row
    may hold a path from before the rule, or one put there by hand; that is left alone)."""
    path = storage.stored_path("staging", value)
    if path is None:
        logger.warning("a stored staging path outside data/staging was not removed")
        return
    path.unlink(missing_ok=True)


def submissions_cleanup(*, now: dt.datetime | None = None) -> int:
    """Remove staged files nobody confirmed in time, and files in staging/ no submission
    names (left by a request that stopped half way). Returns how many were removed."""
    now = now or timezone.now()
    cutoff = now - STAGED_LIFETIME
    stale = Submission.objects.filter(updated_at__lt=cutoff).exclude(staged_path="")
    count = 0
    for submission in stale:
        _unstage(submission)
        submission.save(update_fields=["staged_path"])
        count += 1
    kept = {
        storage.stored_path("staging", value)
        for value in Submission.objects.exclude(staged_path="").values_list(
            "staged_path", flat=True
        )
    }
    for path in storage.area_root("staging").iterdir():
        if path in kept or path.is_symlink() or not path.is_file():
            continue
        if path.stat().st_mtime < cutoff.timestamp():
            path.unlink(missing_ok=True)
            count += 1
    return count
