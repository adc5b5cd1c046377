"""Herald's ingest API: validate, store in PostgreSQL, enqueue on Redis, answer 202."""
