-- The role the application (code server, daemon, webserver) connects as: data access, no DDL.
-- Run by the compose `migrate` service as the owner (POSTGRES_USER "observatory") in the
-- application's database after the migrations, on every start: idempotent, and it re-sets the
-- role's password from the environment. psql reads APP_DB_USER (default observatory_app),
-- APP_DB_PASSWORD, DAGSTER_DB (default dagster) and APP_TEMPLATE_DB (default template1):
--   PGHOST=... PGUSER=observatory PGDATABASE=observatory psql -X -v ON_ERROR_STOP=1 -f create-app-role.sql
\set ON_ERROR_STOP on
\getenv app_role APP_DB_USER
\if :{?app_role}
\else
\set app_role observatory_app
\endif
\getenv app_password APP_DB_PASSWORD
\if :{?app_password}
\else
\echo 'create-app-role.sql: APP_DB_PASSWORD is not set'
\quit 3
\endif
\getenv dagster_db DAGSTER_DB
\if :{?dagster_db}
\else
\set dagster_db dagster
\endif
\getenv template_db APP_TEMPLATE_DB
\if :{?template_db}
\else
\set template_db template1
\endif
SELECT current_user AS owner, current_database() AS app_db \gset

SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION', :'app_role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_role') \gexec
-- CREATEDB only for the backup jobs: verification restores into a scratch database of its own.
-- The role owns nothing in the application's or Dagster's database, so it cannot change their schema.
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L CREATEDB', :'app_role', :'app_password') \gexec

-- The application's database (the one this script runs in).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"app_db" TO :"app_role";
GRANT USAGE ON SCHEMA public TO :"app_role";
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO :"app_role";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"app_role";
-- Monthly partitions are created and dropped (migration 0005), and the embeddings' HNSW index is
-- dropped and rebuilt around large writes (0009), only through the owner's SECURITY DEFINER
-- functions, which nobody else may execute.
SELECT format('GRANT EXECUTE ON FUNCTION %s TO %I', p.oid::regprocedure, :'app_role')
  FROM pg_proc p
 WHERE p.pronamespace = 'public'::regnamespace
   AND p.proname IN ('ensure_month_partition', 'drop_month_partition', 'drop_item_embeddings_index',
                     'build_item_embeddings_index')
\gexec

-- Dagster's own database (runs, event log, schedules): the same split.
\connect :"dagster_db"
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"dagster_db" TO :"app_role";
GRANT USAGE ON SCHEMA public TO :"app_role";
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO :"app_role";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"app_role";

-- New databases (the verification's scratch databases) come with pgvector already installed,
-- which a role without superuser rights could not create itself.
\connect :"template_db"
CREATE EXTENSION IF NOT EXISTS vector;
