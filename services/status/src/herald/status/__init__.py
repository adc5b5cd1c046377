"""Herald's status service: read-only answers about messages, straight from PostgreSQL."""
