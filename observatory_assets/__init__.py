"""Observatory: Dagster software-defined assets for media monitoring on PostgreSQL."""
