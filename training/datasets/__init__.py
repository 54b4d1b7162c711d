"""Public dataset adapters (SPEC section 7)."""
