-- Runs once, on the compose stack's first start (an empty data volume), as the superuser.
-- Mirrors a production database: Herald's own role owns the database and is not a superuser;
-- the status service logs in as a member of herald_readonly, which migration 0003 grants SELECT.
-- The passwords are for a laptop only: docker-compose.yml says so beside them.
CREATE ROLE herald LOGIN PASSWORD 'herald';
CREATE DATABASE herald OWNER herald;
CREATE ROLE herald_readonly NOLOGIN;
CREATE ROLE herald_status LOGIN PASSWORD 'herald_status' IN ROLE herald_readonly;
-- Behind PgBouncer (docs/operations.md, "Connection budget") Herald sends no startup options,
-- so its roles carry the session settings it relies on as their own defaults; Herald checks
-- them on every pooled connection. Without PgBouncer Herald's connections set the same
-- themselves, and herald-migrate sets no statement timeout at all.
ALTER ROLE herald IN DATABASE herald SET TimeZone = 'UTC';
ALTER ROLE herald IN DATABASE herald SET statement_timeout = '4s';
ALTER ROLE herald_status IN DATABASE herald SET TimeZone = 'UTC';
ALTER ROLE herald_status IN DATABASE herald SET statement_timeout = '4s';
