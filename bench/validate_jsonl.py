"""Benchmark batches.jsonl_check on a file at the Batch API's limits.

Generates a ~200 MB, 50,000-line chat-completions input file (about 4 KB of message text a
line), checks it, and reports throughput and memory; then checks copies with one bad line at
line 25,000 to show the problem is found and named by its line. Each measurement runs in a fresh
subprocess so that memory figures are not polluted by the generator or by earlier runs.

    .venv/bin/python bench/validate_jsonl.py             # files in a temporary directory
    .venv/bin/python bench/validate_jsonl.py --dir bench/out --keep
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batches.jsonl_check import MAX_BYTES, MAX_REQUESTS, check_jsonl  # noqa: E402

MIB = 1024 * 1024
LINES = MAX_REQUESTS
BAD_LINE = 25_000
# Line sizes vary around this so that the file is close to, but within, 200 MB.
MEAN_LINE_BYTES = 4_130
LINE_SPREAD = 450

# Words the benchmark's prompts are made of, a few of them non-ASCII as real text often is.
VOCABULARY = """
the a an of to in for on with as by at from about into over after under between through
customer order invoice refund shipment delivery account subscription payment warranty
product service support request ticket issue question answer summary report review
please could would should might must can will kindly quickly carefully thoroughly
summarise classify translate extract rewrite explain compare describe evaluate list
battery screen keyboard charger laptop phone headphones camera printer router cable
broken late missing damaged wrong excellent poor average slow fast friendly rude helpful
Monday Tuesday Wednesday Thursday Friday weekend morning evening yesterday tomorrow
London Paris Berlin Madrid Tokyo Toronto Sydney Lisbon Zürich Montréal São café naïve
I we you they she he it my our your their this that these those which who what when
was were is are be been being have has had do does did not never always sometimes
price discount coupon total tax shipping return exchange policy days weeks months
happy disappointed satisfied confused frustrated grateful surprised impressed annoyed
"""

SYSTEM_PROMPTS = (
    "You are a support analyst. Classify the customer message into one of: billing, "
    "shipping, product defect, account, other. Answer with the label and one sentence why.",
    "You summarise customer feedback for a weekly report. Write three bullet points, "
    "neutral tone, no more than 25 words each.",
    "Extract every product, date and amount mentioned in the text as JSON with keys "
    "products, dates and amounts. Use null when a key has nothing.",
    "Translate the message into plain English suitable for a support ticket title and body.",
)


def make_corpus(rng: random.Random, size: int) -> str:
    """A few MB of sentence-like text; each request takes a window of it.

    Slicing one corpus is much faster than drawing every word of 200 MB one at a time, and the
    windows still differ from line to line as real prompts do.
    """
    words = VOCABULARY.split()
    sentences = []
    length = 0
    while length < size:
        words = rng.choices(words, k=rng.randint(6, 22))
        sentence = " ".join(words)
        sentence = sentence[0].upper() + sentence[1:] + rng.choice(".!?..")
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)


def request_lines(seed: int = 7) -> Iterator[bytes]:
    """Yield the 50,000 encoded request lines of the benchmark file, deterministically.

    Lines are filled into a JSON template rather than built with json.dumps, which spends most
    of its time escaping 4 KB strings; the corpus is checked once to need no escaping, so the
    result is the same JSON.
    """
    rng = random.Random(seed)
    corpus = make_corpus(rng, 4 * MIB)
    if json.dumps(corpus, ensure_ascii=False)[1:-1] != corpus:
        raise AssertionError("the corpus must need no JSON escaping")
    systems = [json.dumps(system) for system in SYSTEM_PROMPTS]
    template = (
        '{{"custom_id": "request-{number:05d}", "method": "POST", "url": "/v1/chat/completions",'
        ' "body": {{"model": "gpt-4o-mini", "messages": [{{"role": "system", "content": {system}}},'
        ' {{"role": "user", "content": "{text}"}}], "max_tokens": 400, "temperature": 0.2}}}}\n'
    )
    overhead = len(template.format(number=0, system="", text=""))
    for number in range(1, LINES + 1):
        system = rng.choice(systems)
        length = MEAN_LINE_BYTES + rng.randint(-LINE_SPREAD, LINE_SPREAD) - overhead - len(system)
        start = corpus.find(". ", rng.randrange(len(corpus) - length - 1000)) + 2
        text = corpus[start : start + length].rstrip()
        yield template.format(number=number, system=system, text=text).encode()


def write_valid_file(path: Path) -> int:
    """Write the benchmark file and return its size; it must stay within the byte limit."""
    size = 0
    with path.open("wb", buffering=4 * MIB) as out:
        for line in request_lines():
            out.write(line)
            size += len(line)
        # Flush to disk now, or the kernel's writeback competes with the timed runs that follow.
        out.flush()
        os.fsync(out.fileno())
    if size > MAX_BYTES:
        raise SystemExit(f"generated {size:,} bytes, over the {MAX_BYTES:,} limit: lower the mean")
    return size


def duplicate_custom_id(line: bytes) -> bytes:
    return line.replace(f'"request-{BAD_LINE:05d}"'.encode(), b'"request-00003"', 1)


def broken_json(line: bytes) -> bytes:
    return line.replace(b'", "method"', b'" "method"', 1)


def write_with_bad_line(source: Path, path: Path, corrupt: Callable[[bytes], bytes]) -> None:
    """Copy the valid file, changing only line BAD_LINE."""
    with source.open("rb") as src, path.open("wb", buffering=4 * MIB) as out:
        for number, line in enumerate(src, 1):
            out.write(corrupt(line) if number == BAD_LINE else line)
        out.flush()
        os.fsync(out.fileno())


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB.

    On Linux ru_maxrss is carried over from the parent across fork and exec, so in a child
    started by the (large) generating process it would hide any growth; VmHWM in
    /proc/self/status belongs to the new program alone. Elsewhere fall back to ru_maxrss.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS


def measure(path: Path, repeat: int, trace: bool) -> dict[str, object]:
    """Run check_jsonl on path (in this process, meant to be a fresh one) and report figures.

    Peak RSS growth is the peak resident size after minus before; tracemalloc, when asked for,
    gives the peak of Python allocations during one check (it slows the check, so it runs
    after the timed ones).
    """
    rss_before = peak_rss_kib()
    times = []
    for _ in range(repeat):
        with path.open("rb") as stream:
            started = time.perf_counter()
            report = check_jsonl(stream)
            times.append(time.perf_counter() - started)
    rss_after = peak_rss_kib()
    result: dict[str, object] = {
        "seconds": statistics.median(times),
        "bytes": report.bytes,
        "lines": report.lines,
        "ok": report.ok,
        "problem_count": report.problem_count,
        "problems": [str(problem) for problem in report.problems],
        "file_problems": report.file_problems,
        "rss_growth_kib": rss_after - rss_before,
        "summary": report.summary(),
    }
    if trace:
        tracemalloc.start()
        with path.open("rb") as stream:
            check_jsonl(stream)
        result["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result


def measure_in_subprocess(path: Path, repeat: int, trace: bool) -> dict[str, object]:
    command = [sys.executable, __file__, "--measure", str(path), "--repeat", str(repeat)]
    if trace:
        command.append("--trace")
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def run(directory: Path, repeat: int) -> bool:
    """Generate, measure and print the table; True when every case came out as expected."""
    valid = directory / "chat-200mb.jsonl"
    started = time.perf_counter()
    size = write_valid_file(valid)
    generated = time.perf_counter() - started
    print(f"file: {valid}")
    print(f"      {LINES:,} lines, {size:,} bytes ({size / MIB:.1f} MB)")
    print(f"      generated in {generated:.1f} s ({size / MIB / generated:.0f} MB/s)")
    print()
    print(f"{'case':<22} {'result':<8} {'time':>7} {'MB/s':>7} {'RSS growth':>11} {'py peak':>9}")
    figures = measure_in_subprocess(valid, repeat, trace=True)
    valid_summary = figures["summary"]
    as_expected = bool(figures["ok"])
    rate = figures["bytes"] / MIB / figures["seconds"]
    result = "ok" if figures["ok"] else "REJECTED"
    print(
        f"{'valid file':<22} {result:<8} {figures['seconds']:>6.2f}s {rate:>7.1f}"
        f" {figures['rss_growth_kib'] / 1024:>8.1f} MB"
        f" {figures['tracemalloc_peak'] / MIB:>6.1f} MB"
    )
    bad_cases = {"duplicate custom_id": duplicate_custom_id, "broken JSON": broken_json}
    named = []
    for name, corrupt in bad_cases.items():
        bad = directory / f"chat-200mb-{name.replace(' ', '-')}.jsonl"
        write_with_bad_line(valid, bad, corrupt)
        figures = measure_in_subprocess(bad, repeat=1, trace=False)
        bad.unlink()
        rate = figures["bytes"] / MIB / figures["seconds"]
        exact = figures["problem_count"] == 1 and figures["problems"][0].startswith(
            f"line {BAD_LINE}: "
        )
        result = "rejected" if not figures["ok"] else "MISSED"
        print(
            f"{name:<22} {result:<8} {figures['seconds']:>6.2f}s {rate:>7.1f}"
            f" {figures['rss_growth_kib'] / 1024:>8.1f} MB {'':>9}"
        )
        named.append((name, exact, figures["problems"], figures["file_problems"]))
        as_expected = as_expected and exact
    print()
    print(f"valid file: {valid_summary}")
    for name, exact, problems, file_problems in named:
        verdict = "exactly that line" if exact else "NOT exactly that line"
        print(f"{name}: {verdict}: {'; '.join(problems + file_problems)}")
    print()
    print("MB = 2**20 bytes (OpenAI's 200 MB limit is 209,715,200 bytes); time is the median")
    print(f"of {repeat} runs; py peak is tracemalloc's peak during one more run.")
    return as_expected


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dir", type=Path, help="where to write the files (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the valid file (with --dir)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the valid file")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.repeat, args.trace)))
        return
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        as_expected = run(args.dir, args.repeat)
        if not args.keep:
            (args.dir / "chat-200mb.jsonl").unlink()
    else:
        with tempfile.TemporaryDirectory() as directory:
            as_expected = run(Path(directory), args.repeat)
    if not as_expected:
        raise SystemExit("some case did not come out as expected (see above)")


if __name__ == "__main__":
    main()
