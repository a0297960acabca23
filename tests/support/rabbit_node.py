"""A RabbitMQ node of the test's own: bench/faultkit/rabbit_node.py (shared with the benches)."""

from bench.faultkit.rabbit_node import MAX_MESSAGE_SIZE, RabbitNode, spare_port

__all__ = ["MAX_MESSAGE_SIZE", "RabbitNode", "spare_port"]
