"""The benchmarks of `make bench`, against `make dev`'s stack on loopback:

    python -m scripts.bench               the gateway against the LiteLLM proxy and Portkey
                                          (concurrency 1 and 8, JSON and streamed), a soak,
                                          the usage write, litellm's overhead, cold init, size
                                          (bench-results.json)
    python -m scripts.bench.keys          what virtual keys, limits and the cache add
                                          (bench-keys.json)
    python -m scripts.bench.cost_report   the cost report over 1,000 and 100,000 requests
                                          (bench-report.json)
    python -m scripts.bench.sessions      20-turn agent sessions on two deployments, with and
                                          without session affinity: cache reads and cost
                                          (bench-sessions.json)
    python -m scripts.bench.profile       where the gateway's time goes (`make profile`)

`stack` stands the gateway up, `references` the other gateways, `load` and `soak` drive them,
`measure` and `cold` take the figures, `render` reports them.
"""
