"""Capture, reassembly, storage, queries and the daemon. Never imports textual."""
