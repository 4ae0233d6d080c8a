"""Read models built from the key store's events: each tracks its position and can be rebuilt."""
