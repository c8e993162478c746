"""Where a setting is read: every setting and marker keyword in one registry (``options``), units, the baseline file."""
