"""Offline point-in-time export of feature services from the event archive (docs/export.md).

- ``engine``: ``prepare`` (validation) and ``run_export``; DuckDB selection, both paths, assembly.
- ``spine``: reading and validating the spine (pyarrow).
- ``plan``: which views and output columns a service exports (pure).
- ``replay``: the per-event path through the core (pure Python).
- ``vector`` / ``sqlpred``: the vectorised path and its exact predicate translation (DuckDB).
- ``audit`` / ``responses``: online/offline consistency from a JSON Lines response log.

pandas, pyarrow and DuckDB are imported only here and in ``feature_store.archive``.
"""
