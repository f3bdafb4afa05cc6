"""The HTTP surface: the FastAPI app, its routes and middleware."""
