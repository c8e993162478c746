"""Entry point (placeholder while the core is written)."""
