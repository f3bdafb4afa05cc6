"""The request pipeline: authenticate, validate, admit, cache, route, meter."""
