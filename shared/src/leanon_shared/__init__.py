"""What the three LeanOn services agree on: wire models, topics, codec, settings, telemetry."""
