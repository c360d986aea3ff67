"""Real servers that Tally's own tools start and stop: the tests, ``tally bench`` and ``tally drill``.

Nothing here is imported by the service itself; a harness may use drivers (psycopg) and start
processes, but reaches Tally only from outside, as a client would.
"""
