"""`ks-serve BUNDLE`: the streaming runtime behind a web page and an API, in one process.

protocol.py (frames in, messages out, the limits), session.py (one client's stream), service.py (every stream
through one StreamScheduler on one worker thread), metrics.py (Prometheus), video.py (a POSTed video through
`Detector.detect`), app.py (the Starlette app), cli.py (`ks-serve`), static/ (the page). docs/serving.md has the
protocol. Starlette, uvicorn and prometheus_client come with the `serve` extra; nothing outside this package
imports it.
"""
