"""The throughput/latency benchmark (`python -m ops.bench.run`); kept out of the test suite because
its figures depend on the machine and a timed test would be flaky rather than informative."""
