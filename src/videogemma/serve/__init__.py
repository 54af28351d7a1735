"""Serving: `videogemma serve`, an OpenAI-compatible chat-completions server for videos with a page at `/`.

`app.create_app` builds the FastAPI application (routes, access guard, errors in the OpenAI shape),
`batching` runs the models in one thread with dynamic batching, `coaching` runs the live coach on a client's
frames (`WS /v1/coach/stream`), `media` turns request video URLs into files (uploads and `--media-root` paths
only), `protocol` holds the wire format, `limits` every bound, `commands` the command line. FastAPI, uvicorn
and websockets come with the `serve` extra (`pip install videogemma[serve]`).
"""
