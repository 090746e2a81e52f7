"""rtcs benchmark suite: a load generator, two baselines and four workloads.

Run ``python -m bench --help``; the method and the latest numbers are in
``docs/performance.md``.
"""
