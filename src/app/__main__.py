"""``python -m src.app``: start the service (HOST/PORT from the environment, Cloud Run style).

uvicorn picks uvloop and httptools (both in requirements.txt); ``UVICORN_LOOP`` / ``UVICORN_HTTP``
(the names uvicorn's own CLI reads) choose others, e.g. ``asyncio`` / ``h11``.
"""

from __future__ import annotations

import os

import uvicorn


def main() -> None:
    uvicorn.run(
        "src.app.main:create_app",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        log_config=None,
        access_log=False,
        # X-Forwarded-For is read by our middleware, for TRUSTED_PROXY_HOPS hops only
        # (src/app/client_address.py); uvicorn's own handling trusts the client-written leftmost entry.
        proxy_headers=False,
        loop=os.environ.get("UVICORN_LOOP", "auto"),
        http=os.environ.get("UVICORN_HTTP", "auto"),
    )


if __name__ == "__main__":
    main()
