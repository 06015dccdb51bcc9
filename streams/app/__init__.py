"""Faust adapters: the apps, topics, tables and thin agents around the pure core."""
