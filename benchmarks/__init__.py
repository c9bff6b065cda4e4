"""Benchmarks of TraqPoint-VO: one module per benchmark (``python -m benchmarks.NAME``) on a shared runner.

See ``benchmarks/README.md`` for the commands, the data each needs, the result schema and measured tables.
"""
