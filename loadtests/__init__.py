"""Load tests (Locust), the headless runner, the scaling benchmark and the monolith baseline.

    python -m loadtests.run --url http://127.0.0.1:8000 --shape steady --users 4 --duration 60s
    python -m loadtests.scaling --layouts 1-1-1-1,2-1-1-1 --duration 60s --users 4
    python -m loadtests.monolith --workers 2 --port 8100

`loadtests.harness` is the one place that starts a service (the application on Ray Serve, or a process), waits
for `/readyz`, picks or checks ports, reads the serve profile and times an image: the tests (through
tests/conftest.py), the benchmarks and these load tests all use it. Nothing here is imported by the service;
Locust and psutil come with the `test` extra.
"""
