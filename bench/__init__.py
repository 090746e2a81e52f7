"""rtcs benchmark suite: a load generator, two baselines, four workloads, and routing rules.

Run ``python -m bench --help``; the method and the latest numbers are in
``docs/performance.md``.
"""
