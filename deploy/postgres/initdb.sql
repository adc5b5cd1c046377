-- Runs once, on the compose stack's first start (an empty data volume), as the superuser.
-- Mirrors a production database: Herald's own role owns the database and is not a superuser;
-- the status service logs in as a member of herald_readonly, which migration 0003 grants SELECT.
-- The passwords are for a laptop only: docker-compose.yml says so beside them.
CREATE ROLE herald LOGIN PASSWORD 'herald';
CREATE DATABASE herald OWNER herald;
CREATE ROLE herald_readonly NOLOGIN;
CREATE ROLE herald_status LOGIN PASSWORD 'herald_status' IN ROLE herald_readonly;
