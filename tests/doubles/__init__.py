"""Loopback servers that stand in for AWS and LLM providers in tests."""
