"""The docs' commands, the README, the benchmark scripts."""
