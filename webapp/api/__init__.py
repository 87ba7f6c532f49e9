"""One blueprint per domain; each route parses, calls one shared service, commits, serialises."""
