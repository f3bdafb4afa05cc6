"""The benchmarks of `make bench`, against the local stack on loopback:

    python -m scripts.bench               the gateway: added latency, litellm's overhead, CPU,
                                          cold init, size (bench-results.json)
    python -m scripts.bench.keys          what virtual keys, limits and the cache add
                                          (bench-keys.json)
    python -m scripts.bench.cost_report   the cost report over 1,000 and 100,000 requests
                                          (bench-report.json)

`stack` stands the gateway up, `measure` and `cold` take its figures, `render` reports them.
"""
