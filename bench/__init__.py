"""streambus benchmarks: ``python -m bench`` (see bench/__main__.py and docs/performance.md).

Not part of the library and not run by the test suite (except a seconds-long smoke run):
numbers are measured on demand and committed to docs/performance.md.
"""
