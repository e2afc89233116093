"""Bad-input matrix over the C ABI, generated from include/acestep_runtime.h (see generate.py)."""
