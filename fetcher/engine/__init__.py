"""The download engine: one archive over one or several connections, into a .part file."""
