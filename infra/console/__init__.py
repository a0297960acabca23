"""The web console's generic parts: accounts, sessions, CSRF, rate limits and the server.

``infra`` never names a worker: the pages that know requests, incidents, dead
letters and consent live in ``workers/console`` and register as ``Section``s.
"""
