"""`make bench`: pytest-benchmark suites (bench_*.py) and the script that writes the results table (report.py)."""
