"""An OpenAI-shaped upstream that answers at once: it measures the router's own cost, not an engine's.

POST /v1/completions and /v1/chat/completions answer a fixed completion of `max_tokens` tokens
(streamed as SSE chunks when asked, one per token, with an optional pause per token);
GET /metrics reports its in-flight count as vLLM's running gauge.
"""
from __future__ import annotations

import asyncio
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from autoscaler.contract import NUM_REQUESTS_RUNNING, NUM_REQUESTS_WAITING

__all__ = ["echo_app"]


def echo_app(name: str = "echo", token_delay_s: float = 0.0) -> Starlette:
    state = {"running": 0, "served": 0}

    async def complete(request: Request) -> Response:
        payload = json.loads(await request.body())
        n = int(payload.get("max_tokens") or 1)
        state["running"] += 1
        if not payload.get("stream"):
            try:
                if token_delay_s:
                    await asyncio.sleep(token_delay_s * n)
                state["served"] += 1
                return JSONResponse({"id": f"cmpl-{state['served']}", "object": "text_completion",
                                     "model": payload.get("model"), "engine": name,
                                     "choices": [{"index": 0, "text": "x" * n, "finish_reason": "length"}],
                                     "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}})
            finally:
                state["running"] -= 1

        async def chunks():
            try:
                for i in range(n):
                    if token_delay_s:
                        await asyncio.sleep(token_delay_s)
                    yield f"data: {json.dumps({'choices': [{'index': 0, 'text': 'x'}], 'engine': name})}\n\n".encode()
                usage = {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}
                yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
                yield b"data: [DONE]\n\n"
                state["served"] += 1
            finally:
                state["running"] -= 1

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def metrics(_: Request) -> Response:
        text = (f'{NUM_REQUESTS_RUNNING}{{model_name="{name}"}} {state["running"]}\n'
                f'{NUM_REQUESTS_WAITING}{{model_name="{name}"}} 0\n')
        return Response(text, media_type="text/plain")

    async def health(_: Request) -> Response:
        return Response("ok")

    return Starlette(routes=[Route("/v1/completions", complete, methods=["POST"]),
                             Route("/v1/chat/completions", complete, methods=["POST"]),
                             Route("/metrics", metrics), Route("/health", health)])


def main(argv: list[str] | None = None) -> int:
    """`python -m autoscaler.router.echo --port N [--served-model-name M] [--token-delay-s S]`: an echo
    engine that takes a vLLM server's common flags (other flags are ignored)."""
    import argparse

    import uvicorn

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--served-model-name", default="echo")
    ap.add_argument("--token-delay-s", type=float, default=0.0)
    args, _ = ap.parse_known_args(argv)
    uvicorn.run(echo_app(args.served_model_name, args.token_delay_s), host=args.host, port=args.port,
                log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
