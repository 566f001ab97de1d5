"""``python -m src.app``: start the service (HOST/PORT from the environment, Cloud Run style)."""

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
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
