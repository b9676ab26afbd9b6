"""Plausible answer bodies for each batch endpoint, as the real endpoints would send them.

Bodies are deterministic (ids and vectors come from the ``rng`` the caller seeds per line) so
that a test can rely on a file's exact bytes across runs.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from simulator.inputs import RequestLine, reply_text

DEFAULT_MODEL = "gpt-4o-mini"
EMBEDDING_DIMENSIONS = 8
# A 1x1 transparent PNG, so image answers decode as a real image.
PIXEL_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def _hex(rng: random.Random, bits: int = 96) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def success_body(
    endpoint: str, line: RequestLine, *, created: int, rng: random.Random
) -> dict[str, Any]:
    """The 200 body the endpoint would have answered ``line`` with."""
    model = line.model or DEFAULT_MODEL
    builder = _BUILDERS.get(endpoint, _echo)
    return builder(line, model, created, rng)


def error_body(line: RequestLine) -> dict[str, Any]:
    """The error body of a request that fails on purpose (custom_id containing ``fail``, or a
    failure the seeded history chose)."""
    if line.fail_status >= 500:
        return {
            "error": {
                "message": (
                    "The server had an error while processing your request. Sorry about that!"
                ),
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    if "fail" not in line.custom_id:
        # A failure of the seeded history (simulator/history.py): what a real one often is.
        embedding = (line.model or "").startswith("text-embedding")
        context, param = (8192, "input") if embedding else (128_000, "messages")
        return {
            "error": {
                "message": (
                    f"This model's maximum context length is {context} tokens. However, your "
                    f"{param} resulted in {context + line.prompt_tokens} tokens. Please reduce "
                    f"the length of the {param}."
                ),
                "type": "invalid_request_error",
                "param": param,
                "code": "context_length_exceeded",
            }
        }
    return {
        "error": {
            "message": f"Simulated failure: custom_id '{line.custom_id}' contains 'fail'.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_value",
        }
    }


def _chat(line: RequestLine, model: str, created: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{_hex(rng)}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply_text(line.text),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": line.prompt_tokens,
            "completion_tokens": line.completion_tokens,
            "total_tokens": line.prompt_tokens + line.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": line.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": line.reasoning_tokens,
                "audio_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_simulator",
    }


def _responses(line: RequestLine, model: str, created: int, rng: random.Random) -> dict[str, Any]:
    # A reasoning model's answer starts with its (unpublished) reasoning, as an item of its own.
    reasoning = (
        [{"type": "reasoning", "id": f"rs_{_hex(rng)}", "summary": []}]
        if line.reasoning_tokens
        else []
    )
    return {
        "id": f"resp_{_hex(rng)}",
        "object": "response",
        "created_at": created,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [
            *reasoning,
            {
                "type": "message",
                "id": f"msg_{_hex(rng)}",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": reply_text(line.text), "annotations": []}
                ],
            },
        ],
        "usage": {
            "input_tokens": line.prompt_tokens,
            "input_tokens_details": {"cached_tokens": line.cached_tokens},
            "output_tokens": line.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": line.reasoning_tokens},
            "total_tokens": line.prompt_tokens + line.completion_tokens,
        },
    }


def _vector(seed: str) -> list[float]:
    digest = hashlib.sha256(seed.encode()).digest()
    return [round((byte - 127.5) / 127.5, 6) for byte in digest[:EMBEDDING_DIMENSIONS]]


def _embeddings(line: RequestLine, model: str, created: int, rng: random.Random) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(f"{line.text}:{i}")}
            for i in range(line.n_inputs)
        ],
        "model": model,
        "usage": {"prompt_tokens": line.prompt_tokens, "total_tokens": line.prompt_tokens},
    }


def _completions(line: RequestLine, model: str, created: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"cmpl-{_hex(rng)}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"text": reply_text(line.text), "index": 0, "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": line.prompt_tokens,
            "completion_tokens": line.completion_tokens,
            "total_tokens": line.prompt_tokens + line.completion_tokens,
        },
    }


def _moderations(line: RequestLine, model: str, created: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"modr-{_hex(rng)}",
        "model": model,
        "results": [
            {
                "flagged": False,
                "categories": {"harassment": False, "violence": False},
                "category_scores": {"harassment": 0.0001, "violence": 0.0001},
            }
            for _ in range(line.n_inputs)
        ],
    }


def _images(line: RequestLine, model: str, created: int, rng: random.Random) -> dict[str, Any]:
    return {
        "created": created,
        "data": [{"b64_json": PIXEL_PNG_B64, "revised_prompt": line.text}],
        "usage": {
            "input_tokens": line.prompt_tokens,
            "input_tokens_details": {"text_tokens": line.prompt_tokens, "image_tokens": 0},
            "output_tokens": 0,
            "total_tokens": line.prompt_tokens,
        },
    }


def _videos(line: RequestLine, model: str, created: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"video_{_hex(rng)}",
        "object": "video",
        "model": model,
        "status": "completed",
        "progress": 100,
        "created_at": created,
        "completed_at": created,
        "prompt": line.text,
        "seconds": "4",
        "size": "720x1280",
    }


def _echo(line: RequestLine, model: str, created: int, rng: random.Random) -> dict[str, Any]:
    return {"id": f"echo_{_hex(rng)}", "object": "echo", "model": model, "input": line.text}


_BUILDERS = {
    "/v1/chat/completions": _chat,
    "/v1/responses": _responses,
    "/v1/embeddings": _embeddings,
    "/v1/completions": _completions,
    "/v1/moderations": _moderations,
    "/v1/images/generations": _images,
    "/v1/images/edits": _images,
    "/v1/videos": _videos,
}
