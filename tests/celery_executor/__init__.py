"""The Celery executor: workers on a real broker (Redis, RabbitMQ) and PostgreSQL catalog."""
