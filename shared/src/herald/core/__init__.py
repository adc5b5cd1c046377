"""What Herald's deployables share: settings, statuses, schemas, tables, transitions, setup."""
