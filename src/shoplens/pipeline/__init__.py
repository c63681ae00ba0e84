"""Build stages with declared inputs and outputs, and the runner that orders, reuses,
checks and publishes them."""
