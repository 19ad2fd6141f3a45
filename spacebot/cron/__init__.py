"""Scheduled jobs of an agent: parsing and next-fire times (``schedule``), the scheduler that runs
inside ``cortex:<agent>`` (``runner``), their rows in the agent's DuckDB (``store``), and the
``cron`` conversation tool (``tool``). See docs/cron.md."""
