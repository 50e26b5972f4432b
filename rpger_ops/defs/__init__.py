"""Dagster wiring only: resources, assets, checks, jobs, schedules, sensors.

Plain logic lives outside this package; modules here stay thin.
"""
