"""The examples' shared rooms, one per idea; `examples/__init__.py` maps them.

The programs in `examples/` (and `benchmarks/`) import them, e.g.
`from examples.lib import harness`; nothing here is a program.
"""
