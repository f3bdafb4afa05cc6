"""The local stack that `make dev`, the tests and the benches share: AWS emulated by moto with
the resources of template.yaml, loopback upstream doubles that speak each provider's wire
format, and a helper that serves an ASGI app on a free port."""
