"""Where Herald needs more of a library than its public API: one module per library.

Each module names the version it was written for (pinned in pyproject.toml), prefers the
library's hooks, and has a contract test in tests/contract that fails when that library's
behaviour changes under it (`make lint` runs them).
"""
