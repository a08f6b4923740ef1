"""Shared building blocks: configs, data, model, distributed helpers, experts, I/O."""
