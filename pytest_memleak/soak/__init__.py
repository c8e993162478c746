"""Soak tests: the loop, the watched process, the trend and the memory guard."""
