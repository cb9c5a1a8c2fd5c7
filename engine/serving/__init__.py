"""Talking to the serving engine (MAX Serve, vLLM) and routing traffic to it.

``client``: the LoRA control HTTP API; ``gateway``: the alias router clients call;
``reference_backend``: a CPU stand-in for MAX Serve used in development and tests.
"""
