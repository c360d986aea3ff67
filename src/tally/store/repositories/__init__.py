"""One SQL repository per port, each working on the connection of its transaction."""
