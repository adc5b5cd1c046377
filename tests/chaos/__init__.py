"""Chaos tests: Herald's delivery promise under real crashes of its own processes and servers.

Every test starts its own PostgreSQL and Redis (on free ports, in temporary directories) and the
real deployables, breaks something, and proves that no accepted message is lost or takes effect
twice at the provider. The figures each test measures appear in pytest's warnings summary.
"""
