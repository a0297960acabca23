"""The platform's personal data: the tables the rights act on, shared by every worker.

Not a worker: it consumes nothing. It owns the tables tenants load debtors into
(``tables.py``, described for the rights by ``config/datamap.toml``), the query
helpers that honour restrictions, and ``privacyops seed`` (``cli.py``), which
fills them with synthetic debtors for demos and benchmarks.
"""
