"""Side-by-side load tests: the activator against no proxy and against HAProxy.

Entry point: `python3 loadtest/run.py --help`.
"""
