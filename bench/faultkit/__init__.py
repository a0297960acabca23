"""What the fault suite (issue 14) and its bench share: nodes, a cluster, a PostgreSQL
instance and a TCP proxy of their own, and the fault scenarios. Lives under ``bench``
because the benches may not import the tests (tests/test_layers.py); the tests import it."""
