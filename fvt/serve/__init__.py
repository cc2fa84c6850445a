"""fvt.serve: a trained model behind an HTTP endpoint (``fvt serve``).

``options`` (every setting, checked before work) -> ``runner`` (the model: decode, batch forward,
rows) -> ``batching`` (concurrent requests grouped into one forward) -> ``app`` (the FastAPI routes,
with ``limits``: body size, read timeout, token; and ``metrics``: Prometheus) -> ``server``
(uvicorn, one or several processes) or ``ray_app`` (Ray Serve replicas). Nothing here is imported
by ``fvt serve --help``: ``commands`` holds the flags and imports the rest when the server starts.
See docs/serve.md."""
