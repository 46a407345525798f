"""The HTTP floor of the serving benchmark: an empty ``/get-online-features`` (runs in the Feast venv).

    .stack/feast-venv/bin/python benchmarks/serving/empty_http.py PORT

FastAPI under uvicorn, one process: the web stack Feast's feature server uses, answering ``{}``
after reading the request body, with no feature-store work. Driven by vegeta with the same
requests and rates as Feast's server (``bench_serving``). Standalone: FastAPI and uvicorn
come with Feast, not with this project.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


def main() -> None:
    fastapi: Any = importlib.import_module("fastapi")
    responses: Any = importlib.import_module("fastapi.responses")
    uvicorn: Any = importlib.import_module("uvicorn")
    app = fastapi.FastAPI()

    async def get_online_features(request: Any) -> Any:
        await request.body()
        return responses.Response(b"{}", media_type="application/json")

    async def health() -> Any:
        return responses.Response(b"ok")

    get_online_features.__annotations__["request"] = fastapi.Request
    app.post("/get-online-features")(get_online_features)
    app.get("/health")(health)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
