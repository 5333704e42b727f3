"""Model definitions the built-in engine can run (Llama family)."""
