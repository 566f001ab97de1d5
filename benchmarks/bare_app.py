"""The reference for throughput: a bare FastAPI endpoint, served exactly like the service.

``python -m benchmarks.bare_app`` listens on HOST/PORT with the uvicorn options of
``src/app/__main__.py`` (no log config, no access log, proxy headers).
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/bare")
async def bare() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    uvicorn.run(
        "benchmarks.bare_app:app",
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        log_config=None,
        access_log=False,
        proxy_headers=False,
        loop=os.environ.get("UVICORN_LOOP", "auto"),
        http=os.environ.get("UVICORN_HTTP", "auto"),
    )


if __name__ == "__main__":
    main()
