"""Where the process is read: the C allocator's statistics and ``malloc_trim``."""
