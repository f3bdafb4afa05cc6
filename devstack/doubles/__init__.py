"""Loopback stand-ins for LLM providers: each speaks its provider's real wire format (paths,
auth headers, JSON, SSE) and takes faults to inject."""
