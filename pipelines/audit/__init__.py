"""The ClickHouse audit trail: sink, schema migrations and post-incident analysis (issue 7).

Modules: ``store`` (one ``Store`` interface over a ClickHouse server or the embedded chdb store),
``migrations`` (versioned DDL), ``rows`` (decoded records -> columnar rows keyed by Kafka
coordinates), ``sink`` (consume -> batch -> insert -> commit), ``timeline``, ``summary``,
``plot`` and ``cli``. See docs/audit.md.
"""
