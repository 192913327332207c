"""Load tests (Locust), the headless runner, the scaling benchmark and the monolith baseline.

    python -m loadtests.run --url http://127.0.0.1:8000 --shape steady --users 4 --duration 60s
    python -m loadtests.scaling --layouts 1-1-1-1,2-1-1-1 --duration 60s --users 4
    python -m loadtests.monolith --workers 2 --port 8100

Nothing here is imported by the service; Locust and psutil come with the `test` extra.
"""
