"""Matching domain: plain Python, no Kafka, Redis or HTTP."""
