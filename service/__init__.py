"""Tailor's HTTP layer: the BentoML service, the v1 routes, settings and the CLI client.
The only package that knows HTTP or BentoML."""
