"""The HTTP API: app factory, routes (thin), wire schemas, problems and middleware."""
