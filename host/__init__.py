"""The host side of qrfleet: server, registry, HTTP API and the `qrfleet` command."""
