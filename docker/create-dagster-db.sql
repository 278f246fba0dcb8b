-- The Dagster instance (runs, event log, schedules) gets a database of its own.
CREATE DATABASE dagster OWNER observatory;
