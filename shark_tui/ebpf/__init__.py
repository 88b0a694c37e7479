"""eBPF TLS plaintext capture (BCC). Imported only where used."""
