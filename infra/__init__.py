"""Adapters to the outside world (RabbitMQ, SQLite, logging) and the worker runtime."""
