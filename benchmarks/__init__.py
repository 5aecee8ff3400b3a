"""Benchmarks: each module measures areaser against a named peer in the same run and prints ratios."""
