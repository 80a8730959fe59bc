from tests.host.conftest import server, shop  # noqa: F401 - the CLI is tried on the host's shop
