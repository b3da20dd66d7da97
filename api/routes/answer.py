"""Grounded answers: retrieve, filter into the token budget, generate a cited answer or abstain.

With ``"stream": true`` the reply is ``text/event-stream``: ``event: token`` messages carry the
answer's pieces (JSON strings) as the generator produces them, then one ``event: done`` carries the
full JSON of the non-streaming reply, citations and verified sentences included. Retrieval, the
context filter and the prompt are done before the stream opens, so every input error is still a
plain JSON 4xx; a failure while generating ends the stream with ``event: error`` and its message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.auth import ReadKey
from api.deps import EngineDep
from api.errors import error_responses
from engine.schemas import AnswerOut, AnswerRequest, answer_out, rerank_option

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/collections/{name}", tags=["answer"], responses=error_responses(404, 409, 501))


def sse(event: str, data: str) -> str:
    """One server-sent event (``data`` must not contain newlines: JSON-encode it)."""
    return f"event: {event}\ndata: {data}\n\n"


@router.post(
    "/answer",
    response_model=AnswerOut,
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true."}},
)
def answer(name: str, body: AnswerRequest, engine: EngineDep, principal: ReadKey):
    """Answer ``question`` from the collection, with citations, the context kept and cut, and timings."""
    t0 = time.perf_counter()
    found, stream = engine.answer_stream(
        name, body.question, k=body.k, budget=body.budget, mode=body.mode, filters=body.filters,
        score_floor=body.score_floor, abstain_threshold=body.abstain_threshold, generator=body.generator,
        abstain_unsupported=body.abstain_unsupported, rerank=rerank_option(body.rerank),
    )
    if not body.stream:
        result = stream.collect()
        return answer_out(found, result, total_ms=(time.perf_counter() - t0) * 1e3)

    def events() -> Iterator[str]:
        try:
            for piece in stream:
                yield sse("token", json.dumps(piece))
        except Exception as exc:  # the stream is open: report in it, not as a status code
            logger.exception("generation failed mid-stream")
            yield sse("error", json.dumps({"detail": f"generation failed: {type(exc).__name__}"}))
            return
        finally:
            stream.close()
        assert stream.result is not None
        yield sse("done", answer_out(found, stream.result, total_ms=(time.perf_counter() - t0) * 1e3).model_dump_json())

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
