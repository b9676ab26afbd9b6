"""A month of a small team's batches, for the dashboard's demo: ``Simulator(history_days=30)``.

The history is a plan drawn from a seeded random generator, so the same seed gives the same
batches (ids, requests, tokens, outcomes) whenever it is drawn; only its dates move, ending at
the simulator's start. A few dozen finished batches, about 1.6 a day, spread over the days,
across models, endpoints, people and labels (metadata ``job``, the key batchweb reads a label
from), mostly completed, some with failed requests, and one each failed with
``token_limit_exceeded``, expired and cancelled; and two still running (one steady, one about
to miss its 24 h window) so finish-time estimates have something to measure.

People are named in metadata ``batchweb_user``, the key batchweb stamps on the batches it
creates and reads the creator from; the nightly embeddings job is a script outside batchweb and
names nobody.

Each batch has its input file (built from its requests when first read) and, once finished,
output and error files like any other batch, whose per-line ``usage`` adds up to the batch's
``usage``. Token counts are drawn per request rather than estimated from the text, so that
long documents and cached prompts cost what they would; the input files abridge the
documents. History durations are real seconds, not divided by the simulator's ``speed``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from simulator.inputs import RequestLine
from simulator.lifecycle import WINDOW_SECONDS, BatchRecord
from simulator.store import FileRecord

# The people who "made" the history, as batchweb usernames.
PEOPLE = ("ada", "ben", "chen", "dana")
MAX_DAYS = 30
BATCHES_PER_DAY = 1.6
INPUT_TTL_SECONDS = 30 * 24 * 3600
# batchweb's metadata keys: who submitted a batch (batches.models.USER_KEY), and its label.
CREATOR_KEY = "batchweb_user"
LABEL_KEY = "job"
# Prompts at least this long have their common start cached, in steps of this many tokens.
CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128


@dataclass(frozen=True)
class Job:
    """A kind of work somebody runs again and again, and what its requests look like."""

    label: str
    model: str
    endpoint: str
    people: tuple[str, ...]  # "" alone: a script outside batchweb
    prefix: str  # of custom_ids
    requests: tuple[int, int]
    prompt_tokens: tuple[int, int]
    output_tokens: tuple[int, int]  # the visible answer
    instructions: str
    texts: tuple[str, ...]
    reasoning_tokens: tuple[int, int] = (0, 0)
    cached_prompt: int = 0  # tokens of instructions every request starts with
    seconds_per_request: tuple[float, float] = (1.0, 4.0)
    weight: int = 1
    extra_metadata: dict[str, str] = field(default_factory=dict)


ISSUES = (
    "card charged twice for one order",
    "cannot reset password, link expired",
    "parcel marked delivered but not received",
    "wants to move to the annual plan",
    "export to CSV times out",
    "app crashes on login since the update",
    "asks for an invoice with a VAT number",
    "subscription cancelled by mistake",
)
PRODUCTS = (
    "merino wool hiking socks",
    "cast-iron skillet, 26 cm",
    "noise-cancelling headphones",
    "bamboo cutting board set",
    "insulated steel water bottle",
    "linen duvet cover, king size",
)
CLAUSES = ("limitation of liability", "termination", "indemnity", "data processing", "renewal")
SURVEY = (
    "The new dashboard is faster but I can't find the export button.",
    "Support answered within an hour, very helpful.",
    "Pricing page is confusing about seats versus users.",
    "Please add dark mode.",
)

JOBS = (
    Job(
        label="support-triage",
        model="gpt-4o-mini",
        endpoint="/v1/chat/completions",
        people=("ada", "ben"),
        prefix="ticket",
        requests=(300, 1200),
        prompt_tokens=(700, 1700),
        output_tokens=(30, 120),
        cached_prompt=1024,
        instructions=(
            "You triage customer support tickets. Answer with a category, a priority from P1 "
            "to P4 and one sentence for the agent."
        ),
        texts=tuple(f"Ticket #{{n}}: {issue}" for issue in ISSUES),
        seconds_per_request=(0.5, 2.0),
        weight=4,
    ),
    Job(
        label="product-copy",
        model="gpt-4.1-mini",
        endpoint="/v1/responses",
        people=("ben", "dana"),
        prefix="sku",
        requests=(100, 800),
        prompt_tokens=(300, 900),
        output_tokens=(150, 400),
        instructions="Write a product description of about 80 words in the shop's friendly tone.",
        texts=tuple(f"Describe SKU {{n}}: {product}" for product in PRODUCTS),
        weight=3,
    ),
    Job(
        label="contract-review",
        model="gpt-4.1",
        endpoint="/v1/chat/completions",
        people=("chen",),
        prefix="clause",
        requests=(40, 300),
        prompt_tokens=(4000, 12000),
        output_tokens=(300, 900),
        cached_prompt=2048,
        instructions=(
            "You review supplier contracts for the legal team. Flag clauses that differ from "
            "our standard terms and explain the risk in plain words."
        ),
        texts=tuple(f"Contract {{n}}, the clause on {clause}: (its text)" for clause in CLAUSES),
        seconds_per_request=(4.0, 12.0),
        weight=2,
    ),
    Job(
        label="eval-reasoning",
        model="o4-mini",
        endpoint="/v1/responses",
        people=("dana", "chen"),
        prefix="q",
        requests=(200, 800),
        prompt_tokens=(300, 1200),
        output_tokens=(80, 300),
        reasoning_tokens=(400, 3000),
        instructions="Solve the problem. Give the final answer on the last line.",
        texts=(
            "Problem {n}: how many ways can 8 rooks be placed on a chessboard so none attack?",
            "Problem {n}: find the smallest prime greater than 10,000 that ends in 7.",
            "Problem {n}: a train leaves at 9:40 at 84 km/h; when has it gone 301 km?",
        ),
        seconds_per_request=(3.0, 10.0),
        weight=2,
    ),
    Job(
        label="search-index",
        model="text-embedding-3-small",
        endpoint="/v1/embeddings",
        people=("",),
        prefix="doc",
        requests=(500, 2000),
        prompt_tokens=(150, 600),
        output_tokens=(0, 0),
        instructions="",
        texts=("Help centre article {n}", "Changelog entry {n}", "Forum answer {n}"),
        seconds_per_request=(0.2, 0.8),
        weight=3,
        extra_metadata={"source": "nightly-cron"},
    ),
    Job(
        label="survey-coding",
        model="gpt-4.1-mini",
        endpoint="/v1/chat/completions",
        people=("ada",),
        prefix="resp",
        requests=(200, 1200),
        prompt_tokens=(250, 600),
        output_tokens=(20, 60),
        instructions="Code the survey answer with one or more themes from the code book.",
        texts=tuple(f"Answer {{n}}: {answer}" for answer in SURVEY),
        weight=1,
    ),
)
JOBS_BY_LABEL = {job.label: job for job in JOBS}


@dataclass
class History:
    """What :func:`build` plans: batches (their ``seq`` still 0) and their input files."""

    batches: list[BatchRecord]
    files: list[FileRecord]


def batch_count(days: int) -> int:
    """How many finished batches ``days`` of history hold."""
    return max(4, round(days * BATCHES_PER_DAY))


def check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_DAYS:
        raise ValueError(f"history_days must be a whole number from 0 to {MAX_DAYS}")
    return days


def result_file_id(batch_id: str, kind: str) -> str:
    """The id of a history batch's output or error file: the same for the same batch, so a
    history drawn again (a state file lost) names the files as it did before."""
    return "file-" + hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()[:24]


def build(*, days: int, seed: int, now: float) -> History:
    """Plan ``days`` of history ending at ``now``: finished batches, and two still running."""
    rng = random.Random(f"history:{seed}:{days}")
    span = days * 86400.0
    # Creation times keep a day clear of the start of the span, so that "the last N days" by
    # calendar day (as a dashboard counts them, whatever the hour now) holds all of them.
    spread = max(span - 86400.0, span / 2)
    count = batch_count(days)
    # One of each rare ending, at fixed places in the month (the last one the oldest).
    specials = {
        round(count * 0.25): ("cancelled", "product-copy"),
        round(count * 0.45): ("failed", "contract-review"),
        round(count * 0.7): ("expired", "eval-reasoning"),
    }
    jobs = _shuffled_jobs(rng, count)
    history = History([], [])
    for index in range(count):
        outcome, label = specials.get(index, ("completed", ""))
        if outcome == "expired" and span < WINDOW_SECONDS + 2 * 3600:
            outcome = "completed"  # a history too short to hold a whole 24 h window
        job = JOBS_BY_LABEL[label] if label else jobs[index]
        # Newest first: the batch's place in the month, with some jitter.
        age = spread * (index + rng.uniform(0.1, 0.9)) / count
        _add(history, rng, job, outcome=outcome, age=age, now=now)
    # Still running: a big triage job started two hours ago, due in about three more; and an
    # evaluation started 21 hours ago that is going too slowly to finish in its 24 h window.
    running = (
        (JOBS_BY_LABEL["support-triage"], 2 * 3600.0, 5 * 3600.0, 3000),
        (JOBS_BY_LABEL["eval-reasoning"], 21 * 3600.0, 28 * 3600.0, 1500),
    )
    for job, age, duration, requests in running:
        if age < span:
            _add(
                history,
                rng,
                job,
                outcome="running",
                age=age,
                now=now,
                duration=duration,
                requests=requests,
            )
    return history


def _shuffled_jobs(rng: random.Random, count: int) -> list[Job]:
    """``count`` jobs, each about as often as its weight says (not left to chance: a short
    history still has every job), in a random order."""
    total = sum(job.weight for job in JOBS)
    jobs = [job for job in JOBS for _ in range(max(1, round(count * job.weight / total)))]
    while len(jobs) < count:
        jobs.append(JOBS[len(jobs) % len(JOBS)])
    rng.shuffle(jobs)
    return jobs[:count]


def _add(
    history: History,
    rng: random.Random,
    job: Job,
    *,
    outcome: str,
    age: float,
    now: float,
    duration: float | None = None,
    requests: int | None = None,
) -> None:
    """Plan one batch of ``job`` created ``age`` seconds before ``now``, ending as ``outcome``."""
    person = rng.choice(job.people)
    count = requests or rng.randint(*job.requests)
    if outcome == "expired":
        count = max(count, job.requests[1])  # too much for one day, at this pace
    batch_id = f"batch_{rng.getrandbits(128):032x}"
    file_id = f"file-{rng.getrandbits(96):024x}"
    validating = rng.uniform(15.0, 90.0)
    in_progress = duration or min(
        20 * 3600.0, 300.0 + count * rng.uniform(*job.seconds_per_request)
    )
    if outcome == "expired":
        in_progress = 30 * 3600.0
    finalizing = rng.uniform(20.0, 240.0)
    failing = rng.random() < 0.3 if outcome == "completed" else False
    lines = [_line(rng, job, number, failing=failing) for number in range(1, count + 1)]

    ends_after = validating + in_progress + finalizing
    cancel_after = None
    if outcome == "cancelled":
        cancel_after = validating + in_progress * rng.uniform(0.2, 0.5)
        ends_after = cancel_after + 300.0
    elif outcome in ("expired", "running"):
        ends_after = 0.0  # not before now: a running batch is young enough, see build()
    elif outcome == "failed":
        ends_after = validating
    # A finished batch ends at least a few minutes before now (newer ones move back).
    created_at = now - max(age, ends_after + rng.uniform(300.0, 3600.0))
    if outcome == "expired":
        created_at = min(created_at, now - WINDOW_SECONDS - 3600.0)

    metadata = {LABEL_KEY: job.label, **job.extra_metadata}
    if person:
        metadata[CREATOR_KEY] = person
    batch = BatchRecord(
        id=batch_id,
        seq=0,
        endpoint=job.endpoint,
        input_file_id=file_id,
        completion_window="24h",
        metadata=metadata,
        created_at=created_at,
        model=job.model,
        lines=lines,
        input_errors=[_token_limit_error(job.model)] if outcome == "failed" else [],
        validating_s=validating,
        in_progress_s=in_progress,
        finalizing_s=finalizing,
    )
    if cancel_after is not None:
        batch.cancel_at = created_at + cancel_after
        batch.cancelling_s = rng.uniform(30.0, 300.0)
    uploaded = created_at - rng.uniform(5.0, 120.0)
    day = dt.datetime.fromtimestamp(created_at, tz=dt.UTC).strftime("%Y-%m-%d")
    history.batches.append(batch)
    history.files.append(
        FileRecord(
            id=file_id,
            filename=f"{job.label}-{day}.jsonl",
            purpose="batch",
            created_at=uploaded,
            expires_at=uploaded + INPUT_TTL_SECONDS,
            source=(batch_id, "input"),
        )
    )


def _line(rng: random.Random, job: Job, number: int, *, failing: bool) -> RequestLine:
    prompt = rng.randint(*job.prompt_tokens)
    cached = 0
    # The shared instructions are cached once the prompt is long enough, but not every time.
    if job.cached_prompt and prompt >= CACHE_MIN_TOKENS and rng.random() < 0.85:
        cached = min(job.cached_prompt, prompt) // CACHE_STEP * CACHE_STEP
    reasoning = rng.randint(*job.reasoning_tokens) if job.reasoning_tokens[1] else 0
    visible = rng.randint(*job.output_tokens) if job.output_tokens[1] else 0
    fail_status = 0
    if failing and rng.random() < 0.02:
        fail_status = 500 if rng.random() < 0.3 else 400
    ticket = 40_000 + rng.randrange(10_000)
    return RequestLine(
        custom_id=f"{job.prefix}-{number:05d}",
        model=job.model,
        text=rng.choice(job.texts).format(n=ticket),
        prompt_tokens=prompt,
        completion_tokens=visible + reasoning,
        n_inputs=1,
        fail_status=fail_status,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )


def _token_limit_error(model: str) -> dict[str, Any]:
    return {
        "code": "token_limit_exceeded",
        "message": (
            f"Enqueued token limit reached for {model} in organization org-sim. Limit: "
            "15,000,000 enqueued tokens. Please try again once some in_progress batches have "
            "been completed."
        ),
        "param": None,
        "line": None,
    }


def input_content(batch: BatchRecord) -> bytes:
    """The input file of a history batch, rebuilt from its requests (documents abridged)."""
    job = JOBS_BY_LABEL.get((batch.metadata or {}).get(LABEL_KEY, ""))
    instructions = job.instructions if job else ""
    rows = []
    for line in batch.lines:
        body: dict[str, Any] = {"model": line.model}
        if batch.endpoint == "/v1/embeddings":
            body["input"] = line.text
        elif batch.endpoint == "/v1/responses":
            body.update(instructions=instructions, input=line.text, max_output_tokens=4000)
        else:
            body["messages"] = [
                {"role": "system", "content": instructions},
                {"role": "user", "content": line.text},
            ]
            body["max_completion_tokens"] = 1000
        rows.append(
            json.dumps(
                {"custom_id": line.custom_id, "method": "POST", "url": batch.endpoint, "body": body}
            )
        )
    return "".join(f"{row}\n" for row in rows).encode()
