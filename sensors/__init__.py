"""Sensors that start Observatory runs when new data arrives."""

from sensors.collection_runs import collection_run_sensor

__all__ = ["collection_run_sensor"]
