"""Parity tooling: an independent PyTorch reference of the text2music pipeline and shared test fixtures.

`tools.parity.torch_reference.run_reference` re-derives every non-neural step (prompts, tokenization,
frame count, schedule, solver loop, noise, tiled VAE decode, peak guard) from the spec and runs the
neural parts with torch / transformers / diffusers modules, so the Python host and the Rust core can be
checked against something that shares none of their code.
"""
