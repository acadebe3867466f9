"""Interop with Kapacitor's Go agents, and docs/interop.md's matrix."""
