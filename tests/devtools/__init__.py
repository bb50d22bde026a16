"""Tests of the developer tooling in devtools/."""
