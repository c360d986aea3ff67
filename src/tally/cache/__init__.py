"""Cache servers behind one interface (``services.cache_ports.Cache``), and the per-key rate limiter."""
